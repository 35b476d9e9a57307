//! The description of a lead created in C2S (the Google Ads flow): rendered from its own
//! template (`config/templates/google_ads_description.txt.j2`), which operators can replace
//! without rebuilding, and cut to a number of characters on a character boundary.
//!
//! Owns the rendering only: it must not fetch, store or log anything (the input is personal
//! data and only the finished text leaves this module).
//!
//! # Template context
//!
//! - `is_test`: the lead came from Google's "send test data" button.
//! - `campaign_id`, `form_id`: Google's ids as decimal text, or none.
//! - `cpf`: the CPF the form gave, formatted, when it was valid; else none.
//! - `fields`: the form's other answers, in order, each with `label` and `value`.
//! - `enrichment`: the enrichment message (several lines, printed as rendered), or none.

use minijinja::value::Value;
use minijinja::{Environment, context};

use super::MessageError;
use super::render::{Flatten, plain_text_env, tidy};

/// The default template, also shipped under `config/templates/` for operators.
pub const DEFAULT_TEMPLATE: &str =
    include_str!("../../config/templates/google_ads_description.txt.j2");

/// Default longest description, in characters (`ENRICHER__C2S__DESCRIPTION_MAX_CHARS`).
pub const DEFAULT_MAX_CHARS: usize = 5000;

/// Shortest cap accepted: the marker and a readable start must fit.
pub const MIN_CHARS: usize = 100;

/// Ends a description that was cut.
const MARKER: &str = "\n[…]";

const TEMPLATE_NAME: &str = "google_ads_description";

/// What a description is made of.
#[derive(Clone, Default)]
pub struct Description<'a> {
    pub is_test: bool,
    pub campaign_id: Option<u64>,
    pub form_id: Option<u64>,
    /// Formatted (`529.982.247-25`), only when valid.
    pub cpf: Option<String>,
    /// (label, value) of each other answer of the form.
    pub fields: &'a [(String, String)],
    /// The rendered enrichment message.
    pub enrichment: Option<&'a str>,
}

/// Renders descriptions from a template compiled once at startup.
#[derive(Clone)]
pub struct DescriptionRenderer {
    env: Environment<'static>,
    /// Longest description produced, in characters.
    max_chars: usize,
}

impl std::fmt::Debug for DescriptionRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DescriptionRenderer")
            .field("max_chars", &self.max_chars)
            .finish_non_exhaustive()
    }
}

impl DescriptionRenderer {
    /// Compiles the template and renders sample data through it, so a broken operator
    /// template stops startup instead of failing every lead.
    pub fn new(template_source: String) -> Result<Self, MessageError> {
        // A form answer must not add lines (a fake section) or reorder the text; the
        // enrichment is our own rendered text and is marked safe to keep its lines.
        let env = plain_text_env(TEMPLATE_NAME, template_source, Flatten::AllButSafe)?;
        let renderer = DescriptionRenderer {
            env,
            max_chars: DEFAULT_MAX_CHARS,
        };
        let fields = [("Pergunta".to_owned(), "Resposta".to_owned())];
        for sample in [
            Description::default(),
            Description {
                is_test: true,
                campaign_id: Some(1),
                form_id: Some(2),
                cpf: Some("529.982.247-25".into()),
                fields: &fields,
                enrichment: Some("🔎 ENRIQUECIMENTO DE DADOS"),
            },
        ] {
            renderer
                .render_inner(&sample)
                .map_err(MessageError::Template)?;
        }
        Ok(renderer)
    }

    /// The built-in template.
    pub fn default_template() -> Self {
        // DEFAULT_TEMPLATE is compiled in and `the_default_template_compiles` proves it.
        Self::new(DEFAULT_TEMPLATE.to_owned()).expect("the built-in description template is valid")
    }

    /// The same renderer with another cap (at least [`MIN_CHARS`]).
    pub fn with_max_chars(mut self, max_chars: usize) -> Self {
        self.max_chars = max_chars.max(MIN_CHARS);
        self
    }

    /// The description, at most the configured number of characters.
    pub fn render(&self, d: &Description<'_>) -> Result<String, MessageError> {
        self.render_inner(d).map_err(MessageError::Render)
    }

    fn render_inner(&self, d: &Description<'_>) -> Result<String, String> {
        let fields: Vec<Value> = d
            .fields
            .iter()
            .map(|(label, value)| context! { label => label, value => value })
            .collect();
        let ctx = context! {
            is_test => d.is_test,
            // As text: a template doing arithmetic on an id has no business, and large ids
            // must print exactly.
            campaign_id => d.campaign_id.map(|id| id.to_string()),
            form_id => d.form_id.map(|id| id.to_string()),
            cpf => d.cpf.clone(),
            fields => fields,
            enrichment => d.enrichment.map(|s| Value::from_safe_string(s.to_owned())),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| describe_error(&e))?;
        let text = template.render(ctx).map_err(|e| describe_error(&e))?;
        Ok(cut(tidy(&text), self.max_chars))
    }
}

/// Kind and line only: minijinja's detail may quote the context, which is personal data.
fn describe_error(err: &minijinja::Error) -> String {
    match err.line() {
        Some(line) => format!("{} (template line {line})", err.kind()),
        None => err.kind().to_string(),
    }
}

/// At most `max` characters (not bytes: the CRM counts characters), cut on a character
/// boundary and ending with a marker when cut.
pub fn cut(mut text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let keep = max.saturating_sub(MARKER.chars().count());
    let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    text.truncate(end);
    text.push_str(MARKER);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(String, String)> {
        vec![
            ("Qual o imóvel?".into(), "Apartamento".into()),
            ("Cidade".into(), "Campinas".into()),
        ]
    }

    #[test]
    fn the_default_template_compiles() {
        DescriptionRenderer::default_template();
    }

    #[test]
    fn a_description_holds_the_form_the_ids_the_test_mark_and_the_enrichment() {
        let f = fields();
        let text = DescriptionRenderer::default_template()
            .render(&Description {
                is_test: true,
                campaign_id: Some(20_000_000_001),
                form_id: Some(9_007_199_254_740_993),
                cpf: Some("529.982.247-25".into()),
                fields: &f,
                enrichment: Some("🔎 ENRIQUECIMENTO DE DADOS\n\n✅ DADOS PESSOAIS\nNome: ANA"),
            })
            .unwrap();
        for part in [
            "LEAD DE TESTE",
            "Campanha: 20000000001",
            "Formulário: 9007199254740993",
            "CPF informado: 529.982.247-25",
            "• Qual o imóvel?: Apartamento",
            "• Cidade: Campinas",
            "✅ DADOS PESSOAIS\nNome: ANA",
        ] {
            assert!(text.contains(part), "{part} missing from:\n{text}");
        }
    }

    #[test]
    fn a_real_lead_has_no_test_mark_and_empty_parts_are_left_out() {
        let text = DescriptionRenderer::default_template()
            .render(&Description::default())
            .unwrap();
        assert_eq!(text, "📣 Lead do Google Ads");
    }

    #[test]
    fn a_form_answer_cannot_add_lines() {
        let f = vec![(
            "Obs".to_owned(),
            "a\n✅ DADOS PESSOAIS\u{202E}\r\nCPF: 000".to_owned(),
        )];
        let text = DescriptionRenderer::default_template()
            .render(&Description {
                fields: &f,
                ..Description::default()
            })
            .unwrap();
        assert!(!text.lines().any(|l| l.starts_with("✅")), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("CPF")), "{text}");
    }

    #[test]
    fn a_long_description_is_cut_to_the_character_count_on_a_boundary() {
        // Multi-byte everywhere: "ç" is 2 bytes, "🏠" is 4.
        let f: Vec<(String, String)> = (0..50)
            .map(|i| (format!("Pergunta {i} ção"), "🏠ão".repeat(40)))
            .collect();
        for max in [100, 101, 103, 997, 5000] {
            let text = DescriptionRenderer::default_template()
                .with_max_chars(max)
                .render(&Description {
                    fields: &f,
                    ..Description::default()
                })
                .unwrap();
            assert_eq!(text.chars().count(), max, "cap {max}");
            assert!(text.ends_with("[…]"));
        }
    }

    #[test]
    fn cut_counts_characters_not_bytes() {
        assert_eq!(cut("ãããã".into(), 4), "ãããã");
        let cut_text = cut("🏠".repeat(10), 6);
        assert_eq!(cut_text, "🏠🏠\n[…]");
        assert_eq!(cut_text.chars().count(), 6);
    }

    #[test]
    fn an_operator_template_with_an_unknown_variable_stops_startup() {
        assert!(matches!(
            DescriptionRenderer::new("{{ nope }}".into()),
            Err(MessageError::Template(_))
        ));
        assert!(matches!(
            DescriptionRenderer::new("{% if %}".into()),
            Err(MessageError::Template(_))
        ));
    }

    #[test]
    fn the_cap_has_a_floor() {
        let r = DescriptionRenderer::default_template().with_max_chars(3);
        assert_eq!(r.max_chars, MIN_CHARS);
    }
}
