//! Untrusted text made safe to keep and to show: what a sender or a provider writes must not
//! break the database (NUL), blow up memory (unbounded fields) or forge lines in a message
//! (control characters, bidirectional overrides).
//!
//! Pure functions over strings and JSON values; no I/O.

use serde_json::Value;

/// Default longest text field kept from a provider answer, in characters. Real names and
/// streets are far shorter; the cap only stops a hostile or broken answer.
pub const MAX_FIELD_CHARS: usize = 300;

/// Default most entries kept of each list in a provider answer (phones, e-mails, addresses,
/// companies). The message shows a handful; the rest only cost storage and memory.
pub const MAX_LIST_ITEMS: usize = 20;

/// How much of a provider answer's text is kept: the settings `*.max_field_chars` and
/// `work_api.max_list_items`, defaulting to [`MAX_FIELD_CHARS`] and [`MAX_LIST_ITEMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Longest text field kept, in characters; longer ones are cut.
    pub max_field_chars: usize,
    /// Most entries kept of each list; the rest are dropped unread.
    pub max_list_items: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_field_chars: MAX_FIELD_CHARS,
            max_list_items: MAX_LIST_ITEMS,
        }
    }
}

/// Removes NUL characters from every string and key of `value`, in place. Postgres cannot
/// store them in text or JSON, and no real datum needs one.
pub fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    strip_nul(&mut item);
                    map.insert(key.replace('\0', ""), item);
                }
            } else {
                map.values_mut().for_each(strip_nul);
            }
        }
        _ => {}
    }
}

/// Where the first NUL character of `value` is, as a path (`attributes.customer.name`,
/// `[2].id`), or `None` when there is none.
pub fn find_nul(value: &Value) -> Option<String> {
    fn walk(value: &Value, at: &str) -> Option<String> {
        match value {
            Value::String(s) => s.contains('\0').then(|| at.to_owned()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{at}[{i}]"))),
            Value::Object(map) => map.iter().find_map(|(key, item)| {
                let here = if at.is_empty() {
                    key.replace('\0', "\\0")
                } else {
                    format!("{at}.{}", key.replace('\0', "\\0"))
                };
                if key.contains('\0') {
                    Some(here)
                } else {
                    walk(item, &here)
                }
            }),
            _ => None,
        }
    }
    walk(value, "")
}

/// At most `max` characters of `s`.
pub fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Characters that change how text around them is laid out without being visible: the
/// bidirectional embeddings, overrides and isolates, marks, and line/paragraph separators.
fn is_layout_control(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200E}' | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{2028}' | '\u{2029}')
}

/// One line of text that shows what it says: control characters (C0 including newlines and
/// tabs, DEL, C1) and layout controls each become a space; everything else is kept as is.
/// Used for every value rendered into the CRM message, so a value can neither start a new
/// line (a fake data block) nor reorder what a reader sees.
pub fn single_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_layout_control(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Whether `s` holds a character [`single_line`] would replace.
pub fn has_hidden_controls(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || is_layout_control(c))
}

/// Any JSON value, nested a few levels, with strings drawn from every kind of character
/// (controls, NUL, bidi, emoji) and keys that often hit the names parsers look for.
#[cfg(test)]
pub(crate) fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("attributes".to_owned()),
        Just("updated_at".to_owned()),
        Just("customer".to_owned()),
        Just("phone".to_owned()),
        Just("email".to_owned()),
        Just("status".to_owned()),
        Just("DadosBasicos".to_owned()),
        Just("cpf".to_owned()),
        Just("telefones".to_owned()),
        Just("enderecos".to_owned()),
        "\\PC{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "(?s).{0,24}".prop_map(Value::from),
        Just(Value::from("2026-11-20T17:03:11Z")),
        Just(Value::from("52601815906")),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_removed_from_strings_and_keys_at_any_depth() {
        let mut value = json!({"a\u{0}b": ["x\u{0}", {"c": "d\u{0}e"}], "n": 1});
        assert_eq!(find_nul(&value).as_deref(), Some("a\\0b"));
        strip_nul(&mut value);
        assert_eq!(value, json!({"ab": ["x", {"c": "de"}], "n": 1}));
        assert_eq!(find_nul(&value), None);
    }

    #[test]
    fn the_path_of_a_nul_names_where_it_is() {
        let value = json!([{"id": "1"}, {"attributes": {"customer": {"name": "A\u{0}"}}}]);
        assert_eq!(
            find_nul(&value).as_deref(),
            Some("[1].attributes.customer.name")
        );
    }

    #[test]
    fn clip_cuts_on_character_boundaries() {
        assert_eq!(clip("ção", 2), "çã");
        assert_eq!(clip("abc", 10), "abc");
    }

    #[test]
    fn control_and_bidi_characters_cannot_add_lines_or_reorder_text() {
        let cases = [
            (
                "Maria\n\n✅ DADOS PESSOAIS\nCPF: 1",
                "Maria  ✅ DADOS PESSOAIS CPF: 1",
            ),
            ("a\u{1b}[31mb\u{7}", "a [31mb "),
            ("x\u{202E}yz\u{2066}w", "x yz w"),
            ("a\u{85}b\u{2028}c\r\nd\te", "a b c  d e"),
        ];
        for (raw, want) in cases {
            assert_eq!(single_line(raw), want, "{raw:?}");
            assert!(has_hidden_controls(raw), "{raw:?}");
        }
        assert_eq!(single_line(" - Ana Maria"), " - Ana Maria");
    }

    proptest! {
        #[test]
        fn single_line_output_never_holds_a_control(s in "\\PC*|[\\x00-\\x{9f}\\x{202a}-\\x{202e}a ]{0,40}") {
            let out = single_line(&s);
            prop_assert!(!has_hidden_controls(&out));
            prop_assert!(!out.contains('\n'));
        }
    }
}
