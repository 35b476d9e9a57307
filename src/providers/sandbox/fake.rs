//! Deterministic fake provider data for the built-in sandbox: which CPF a contact resolves to
//! (Diretrix) and what the Work API says about a CPF.
//!
//! Everything here is a pure function of its input, so a demo shows the same people every
//! time and tests can assert on it. It must not use randomness, the clock or the network,
//! and must never contain real personal data: names come from generic lists of common
//! Brazilian names, emails use example.com/example.org, CPFs and CNPJs are generated (with
//! valid check digits so they pass the same validation real ones do).

use serde_json::{Value, json};

/// One key in this many resolves to nobody, so demos show the not-found path.
const CONTACT_MISS_ONE_IN: u64 = 10;
/// One CPF in this many is unknown to the fake Work API.
const PERSON_MISS_ONE_IN: u64 = 20;

const FEMALE_NAMES: &[&str] = &[
    "MARIA",
    "ANA",
    "FRANCISCA",
    "ANTONIA",
    "ADRIANA",
    "JULIANA",
    "MARCIA",
    "FERNANDA",
    "PATRICIA",
    "ALINE",
    "CAMILA",
    "BEATRIZ",
    "LETICIA",
    "LUCIANA",
    "SANDRA",
    "CLAUDIA",
];
const MALE_NAMES: &[&str] = &[
    "JOSE",
    "JOAO",
    "ANTONIO",
    "FRANCISCO",
    "CARLOS",
    "PAULO",
    "PEDRO",
    "LUCAS",
    "LUIZ",
    "MARCOS",
    "RAFAEL",
    "GABRIEL",
    "DANIEL",
    "MARCELO",
    "BRUNO",
    "EDUARDO",
];
const SURNAMES: &[&str] = &[
    "SILVA",
    "SANTOS",
    "OLIVEIRA",
    "SOUZA",
    "RODRIGUES",
    "FERREIRA",
    "ALVES",
    "PEREIRA",
    "LIMA",
    "GOMES",
    "COSTA",
    "RIBEIRO",
    "MARTINS",
    "CARVALHO",
    "ALMEIDA",
    "LOPES",
    "SOARES",
    "FERNANDES",
    "VIEIRA",
    "BARBOSA",
];
/// (city, UF, area code, first two CEP digits): keeps phones and addresses plausible together.
const CITIES: &[(&str, &str, &str, &str)] = &[
    ("SAO PAULO", "SP", "11", "04"),
    ("RIO DE JANEIRO", "RJ", "21", "22"),
    ("BELO HORIZONTE", "MG", "31", "30"),
    ("CURITIBA", "PR", "41", "80"),
    ("PORTO ALEGRE", "RS", "51", "90"),
    ("BRASILIA", "DF", "61", "70"),
    ("SALVADOR", "BA", "71", "40"),
    ("RECIFE", "PE", "81", "50"),
    ("FORTALEZA", "CE", "85", "60"),
    ("CAMPINAS", "SP", "19", "13"),
];
const STREET_TYPES: &[&str] = &["RUA", "AVENIDA", "ALAMEDA", "TRAVESSA"];
const STREET_NAMES: &[&str] = &[
    "DAS FLORES",
    "DOS IPES",
    "DAS PALMEIRAS",
    "DAS ACACIAS",
    "SANTA LUZIA",
    "SAO JOSE",
    "BRASIL",
    "XV DE NOVEMBRO",
    "DOS ANDRADAS",
    "DAS GAIVOTAS",
];
const DISTRICTS: &[&str] = &[
    "CENTRO",
    "JARDIM AMERICA",
    "VILA NOVA",
    "BELA VISTA",
    "SANTA CRUZ",
    "BOA VISTA",
];
const CARRIERS: &[&str] = &["VIVO", "CLARO", "TIM", "OI"];
const PROFESSIONS: &[(&str, &str)] = &[
    ("252210", "CONTADOR"),
    ("223505", "ENFERMEIRO"),
    ("212405", "ANALISTA DE SISTEMAS"),
    ("521110", "VENDEDOR DE COMERCIO VAREJISTA"),
    ("231210", "PROFESSOR"),
    ("214205", "ENGENHEIRO CIVIL"),
];
const MARITAL_STATUSES: &[&str] = &["SOLTEIRO", "CASADO", "DIVORCIADO", "VIUVO"];
const COMPANY_RELATIONS: &[&str] = &["SOCIO", "SOCIO-ADMINISTRADOR", "TITULAR"];

/// Contacts with a fixed answer, so the README's examples show what they describe: the
/// quick-start webhook's phone and e-mail (`examples/c2s_webhook_create.json`) belong to one
/// person, and a family phone lists two people, the second of them named like the lead in the
/// README's candidate example. Every other contact is derived from its hash.
pub const SCRIPTED_CONTACTS: &[(&str, &[&str])] = &[
    ("+5511987654321", &[QUICK_START_CPF]),
    ("maria.souza@example.com", &[QUICK_START_CPF]),
    (FAMILY_PHONE, &[FAMILY_FIRST_CPF, FAMILY_SECOND_CPF]),
];

/// The quick-start lead's person (MARIA APARECIDA SOUZA).
pub const QUICK_START_CPF: &str = "35271840662";
/// The family phone of the README's candidate example, as a contact key.
pub const FAMILY_PHONE: &str = "+5511977770002";
/// The family phone's first candidate (JOAO CARLOS PEREIRA).
pub const FAMILY_FIRST_CPF: &str = "48192637573";
/// The family phone's second candidate (ANA PAULA PEREIRA), whom the lead name "Ana Paula
/// Pereira" matches.
pub const FAMILY_SECOND_CPF: &str = "62748391519";

/// The fixed people behind the scripted contacts: CPF, female, first name, mother's surname,
/// father's surname, mother, father. Always found by the fake Work API.
const SCRIPTED_PEOPLE: &[(&str, bool, &str, &str, &str, &str, &str)] = &[
    (
        QUICK_START_CPF,
        true,
        "MARIA",
        "APARECIDA",
        "SOUZA",
        "HELENA APARECIDA",
        "ANTONIO SOUZA",
    ),
    (
        FAMILY_FIRST_CPF,
        false,
        "JOAO",
        "CARLOS",
        "PEREIRA",
        "TEREZA CARLOS",
        "JOSE PEREIRA",
    ),
    (
        FAMILY_SECOND_CPF,
        true,
        "ANA",
        "PAULA",
        "PEREIRA",
        "TEREZA CARLOS PEREIRA",
        "JOAO CARLOS PEREIRA",
    ),
];

/// CPF digits for a contact key string (an E.164 phone like "+5511987654321" or a lowercased email), or None
/// for roughly 1 in 10 keys (deterministic, e.g. from a hash such as FNV-1a of the key) so demos show the not-found path.
/// The CPF must have valid check digits (compute them: mod-11 algorithm) and must not be all-same digits.
pub fn cpf_for_contact(key: &str) -> Option<String> {
    if let Some((_, cpfs)) = SCRIPTED_CONTACTS.iter().find(|(k, _)| *k == key) {
        return cpfs.first().map(|c| (*c).to_owned());
    }
    let hash = fnv1a(key.as_bytes());
    if hash.is_multiple_of(CONTACT_MISS_ONE_IN) {
        return None;
    }
    let mut draw = Draw::new(hash);
    let mut base: Vec<u8> = (0..9).map(|_| draw.below(10) as u8).collect();
    // "111111111" would get check digits "11": a valid-looking but officially invalid CPF.
    if base.iter().all(|&d| d == base[0]) {
        base[8] = (base[8] + 1) % 10;
    }
    let (first, second) = cpf_check_digits(&base);
    base.push(first);
    base.push(second);
    Some(digits_to_string(&base))
}

/// A complete Work API success body (same shape and field names as the fixture work_api_person.json: status 200,
/// DadosBasicos, DadosEconomicos, emails, telefones, enderecos, empresas, parentes, ...) for a CPF, with a
/// fake name built from fixed lists of common Brazilian first names and surnames chosen by hash of the CPF,
/// emails at example.com/example.org, phones, an address, maybe a company; or the not-found body
/// {"status":404,"reason":"Document not found."} for roughly 1 in 20 CPFs.
pub fn work_api_body(cpf: &str) -> Value {
    let scripted = SCRIPTED_PEOPLE.iter().any(|p| p.0 == cpf);
    if !scripted && fnv1a(cpf.as_bytes()).is_multiple_of(PERSON_MISS_ONE_IN) {
        return json!({"status": 404, "reason": "Document not found."});
    }
    let who = Identity::for_cpf(cpf);
    // A separate stream for the details, so adding a field never changes anyone's name.
    let mut draw = Draw::new(fnv1a(format!("details:{cpf}").as_bytes()));
    let (city, uf, area_code, cep_prefix) = *draw.pick(CITIES);

    let birth = format!(
        "{:02}/{:02}/{}",
        1 + draw.below(28),
        1 + draw.below(12),
        1950 + draw.below(55)
    );
    // Most demo people earn modestly, a few a lot, so every purchasing-power band shows up.
    let income_ceiling = *draw.pick(&[3_000, 6_000, 12_000, 30_000]);
    let income_reais = 1_412 + draw.below(income_ceiling);
    let income_cents = draw.below(100);
    let (power, band) = purchasing_power(income_reais);
    let score_csba = 300 + draw.below(650);
    let score_csb = (score_csba + draw.below(60)).min(999);

    let first = who.first.to_lowercase();
    let last = who.last.to_lowercase();
    let middle = who.middle.to_lowercase();
    let email_addresses = [
        format!("{first}.{last}@example.com"),
        format!("{first}{last}{:02}@example.org", draw.below(100)),
        format!("{first}_{middle}@example.com"),
    ];
    let email_count = 1 + draw.below(3) as usize;
    let emails: Vec<Value> = email_addresses
        .iter()
        .take(email_count)
        .enumerate()
        .map(|(i, address)| {
            json!({
                "email": address,
                "prioridade": (i + 1).to_string(),
                "qualidade": if i == 0 { "BOA" } else { "REGULAR" },
                "emailPessoal": "SIM",
                "blacklist": "NAO",
            })
        })
        .collect();

    let phone_count = 1 + draw.below(3);
    let phones: Vec<Value> = (0..phone_count)
        .map(|i| {
            // The first line is always a mobile so most demo people have a WhatsApp.
            let mobile = i == 0 || draw.below(2) == 0;
            let (number, kind) = if mobile {
                (
                    format!("{area_code}9{:08}", draw.below(100_000_000)),
                    "CELULAR",
                )
            } else {
                (format!("{area_code}3{:07}", draw.below(10_000_000)), "FIXO")
            };
            let whatsapp = if mobile && draw.below(4) != 0 {
                json!("SIM")
            } else {
                Value::Null
            };
            json!({
                "telefone": number,
                "status": "ATIVO",
                "tipo": kind,
                "operadora": draw.pick(CARRIERS),
                "whatsapp": whatsapp,
            })
        })
        .collect();

    let complement = match draw.below(3) {
        0 => Value::Null,
        1 => json!(format!("AP {}", 11 + draw.below(190))),
        _ => json!(format!("CASA {}", 1 + draw.below(4))),
    };
    let address = json!({
        "tipoLogradouro": draw.pick(STREET_TYPES),
        "logradouro": draw.pick(STREET_NAMES),
        "logradouroNumero": (1 + draw.below(2_000)).to_string(),
        "complemento": complement,
        "bairro": draw.pick(DISTRICTS),
        "cidade": city,
        "uf": uf,
        "cep": format!("{cep_prefix}{:06}", draw.below(1_000_000)),
    });

    let companies: Vec<Value> = if draw.below(3) == 0 {
        let relation = *draw.pick(COMPANY_RELATIONS);
        vec![json!({
            "cnpj": fake_cnpj(&mut draw),
            "tipoRelacao": "SOCIO",
            "relacao": relation,
        })]
    } else {
        vec![]
    };
    let (cbo, profession) = *draw.pick(PROFESSIONS);

    json!({
        "status": 200,
        "DadosBasicos": {
            "nome": who.full_name(),
            "cpf": cpf,
            "dataNascimento": birth,
            "sexo": if who.female { "F - FEMININO" } else { "M - MASCULINO" },
            "nomeMae": who.mother,
            "nomePai": who.father,
            "municipioNascimento": city,
            "estadoCivil": draw.pick(MARITAL_STATUSES),
            "situacaoCadastral": "REGULAR",
        },
        "DadosEconomicos": {
            "renda": format!("{income_reais},{income_cents:02}"),
            "poderAquisitivo": {
                "poderAquisitivoDescricao": power,
                "faixaPoderAquisitivo": band,
            },
            "score": {
                "scoreCSB": score_csb.to_string(),
                "scoreCSBFaixaRisco": risk_band(score_csb),
                "scoreCSBA": score_csba.to_string(),
                "scoreCSBAFaixaRisco": risk_band(score_csba),
            },
        },
        "emails": emails,
        "telefones": phones,
        "enderecos": [address],
        "empresas": companies,
        "parentes": [{"nome": who.mother, "vinculo": "MAE"}],
        "profissao": {"cbo": cbo, "descricao": profession},
    })
}

/// A Diretrix answer body: `[{"nome": "...", "cpf": "..."}]` or `[]`.
pub fn diretrix_body(key: &str) -> Value {
    if let Some((_, cpfs)) = SCRIPTED_CONTACTS.iter().find(|(k, _)| *k == key) {
        let people: Vec<Value> = cpfs
            .iter()
            .map(|cpf| json!({"nome": Identity::for_cpf(cpf).full_name(), "cpf": cpf}))
            .collect();
        return Value::Array(people);
    }
    match cpf_for_contact(key) {
        // The same name the fake Work API gives this CPF, as the real providers would agree.
        Some(cpf) => json!([{"nome": Identity::for_cpf(&cpf).full_name(), "cpf": cpf}]),
        None => json!([]),
    }
}

/// The made-up names of the person behind a CPF, shared by both fake providers.
struct Identity {
    female: bool,
    first: &'static str,
    middle: &'static str,
    last: &'static str,
    mother: String,
    father: String,
}

impl Identity {
    fn for_cpf(cpf: &str) -> Self {
        if let Some(&(_, female, first, middle, last, mother, father)) =
            SCRIPTED_PEOPLE.iter().find(|p| p.0 == cpf)
        {
            return Identity {
                female,
                first,
                middle,
                last,
                mother: mother.to_owned(),
                father: father.to_owned(),
            };
        }
        let mut draw = Draw::new(fnv1a(format!("identity:{cpf}").as_bytes()));
        let female = draw.below(2) == 0;
        let first = *draw.pick(if female { FEMALE_NAMES } else { MALE_NAMES });
        // Brazilian order: mother's surname, then father's.
        let middle = *draw.pick(SURNAMES);
        let last = *draw.pick(SURNAMES);
        let mother = format!(
            "{} {} {}",
            draw.pick(FEMALE_NAMES),
            draw.pick(SURNAMES),
            middle
        );
        let father = format!("{} {}", draw.pick(MALE_NAMES), last);
        Identity {
            female,
            first,
            middle,
            last,
            mother,
            father,
        }
    }

    fn full_name(&self) -> String {
        if self.middle == self.last {
            format!("{} {}", self.first, self.last)
        } else {
            format!("{} {} {}", self.first, self.middle, self.last)
        }
    }
}

/// The provider's purchasing-power description and band for a monthly income in reais.
fn purchasing_power(income_reais: u64) -> (&'static str, &'static str) {
    match income_reais {
        0..=2_000 => ("BAIXO", "Até R$ 2000"),
        2_001..=4_000 => ("MEDIO BAIXO", "De R$ 2001 até R$ 4000"),
        4_001..=7_017 => ("MEDIO", "De R$ 4001 até R$ 7017"),
        7_018..=15_000 => ("MEDIO ALTO", "De R$ 7018 até R$ 15000"),
        _ => ("ALTO", "Acima de R$ 15000"),
    }
}

fn risk_band(score: u64) -> &'static str {
    match score {
        700.. => "BAIXO",
        500..700 => "MEDIO",
        _ => "ALTO",
    }
}

/// A CNPJ (headquarters, "0001") with valid check digits.
fn fake_cnpj(draw: &mut Draw) -> String {
    let mut digits: Vec<u8> = (0..8).map(|_| draw.below(10) as u8).collect();
    digits.extend([0, 0, 0, 1]);
    let first = mod11_check_digit(&digits, &[5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]);
    digits.push(first);
    let second = mod11_check_digit(&digits, &[6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]);
    digits.push(second);
    digits_to_string(&digits)
}

/// The two CPF check digits for nine base digits (weights 10..2, then 11..2).
fn cpf_check_digits(base: &[u8]) -> (u8, u8) {
    let first = mod11_check_digit(base, &[10, 9, 8, 7, 6, 5, 4, 3, 2]);
    let mut with_first = base.to_vec();
    with_first.push(first);
    let second = mod11_check_digit(&with_first, &[11, 10, 9, 8, 7, 6, 5, 4, 3, 2]);
    (first, second)
}

/// The Receita Federal mod-11 rule shared by CPF and CNPJ: remainder below 2 gives 0.
fn mod11_check_digit(digits: &[u8], weights: &[u32]) -> u8 {
    let sum: u32 = digits
        .iter()
        .zip(weights)
        .map(|(&d, &w)| u32::from(d) * w)
        .sum();
    let remainder = sum % 11;
    if remainder < 2 {
        0
    } else {
        // remainder is 2..=10, so the digit is 1..=9 and fits a u8.
        (11 - remainder) as u8
    }
}

fn digits_to_string(digits: &[u8]) -> String {
    digits.iter().map(|&d| char::from(b'0' + d)).collect()
}

/// 64-bit FNV-1a: tiny, stable across platforms and releases, good enough to spread keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// A deterministic stream of numbers from a seed (SplitMix64), so one hash can drive many
/// choices without them being correlated.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Self {
        Draw(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0; the slight modulo bias does not matter for fake data).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // Every list passed here is a non-empty constant, so the index is always in range.
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::work_api::WorkApiAnswer;

    const PERSON_FIXTURE: &str = include_str!("../../../tests/fixtures/work_api_person.json");

    fn phone_keys() -> impl Iterator<Item = String> {
        (0..2_000u64).map(|i| format!("+55119{:08}", i * 7_919 % 100_000_000))
    }

    fn email_keys() -> impl Iterator<Item = String> {
        (0..2_000).map(|i| format!("pessoa{i}@example.com"))
    }

    fn cpf_is_valid(cpf: &str) -> bool {
        let digits: Vec<u8> = cpf.bytes().map(|b| b - b'0').collect();
        digits.len() == 11
            && cpf.bytes().all(|b| b.is_ascii_digit())
            && digits.iter().any(|&d| d != digits[0])
            && cpf_check_digits(&digits[..9]) == (digits[9], digits[10])
    }

    fn cnpj_is_valid(cnpj: &str) -> bool {
        let digits: Vec<u8> = cnpj.bytes().map(|b| b - b'0').collect();
        digits.len() == 14
            && mod11_check_digit(&digits[..12], &[5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]) == digits[12]
            && mod11_check_digit(&digits[..13], &[6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
                == digits[13]
    }

    fn found_cpfs() -> Vec<String> {
        phone_keys().filter_map(|k| cpf_for_contact(&k)).collect()
    }

    #[test]
    fn the_check_digit_rule_matches_known_valid_documents() {
        // The public fixture's CPF and the textbook example CNPJ.
        assert!(cpf_is_valid("52601815906"));
        assert!(cpf_is_valid("11144477735"));
        assert!(!cpf_is_valid("52601815907"));
        assert!(!cpf_is_valid("11111111111"));
        assert!(cnpj_is_valid("11222333000181"));
        assert!(!cnpj_is_valid("11222333000182"));
    }

    #[test]
    fn the_same_contact_always_gets_the_same_cpf() {
        for key in ["+5511987654321", "maria.souza@example.com", ""] {
            assert_eq!(cpf_for_contact(key), cpf_for_contact(key), "key {key:?}");
            assert_eq!(diretrix_body(key), diretrix_body(key), "key {key:?}");
        }
        let cpf = "52601815906";
        assert_eq!(work_api_body(cpf), work_api_body(cpf));
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a: the CPFs of a demo stay stable across releases.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn generated_cpfs_have_valid_check_digits_and_are_not_all_the_same_digit() {
        let cpfs: Vec<String> = phone_keys()
            .chain(email_keys())
            .filter_map(|k| cpf_for_contact(&k))
            .collect();
        assert!(cpfs.len() > 3_000, "{}", cpfs.len());
        for cpf in &cpfs {
            assert!(cpf_is_valid(cpf), "{cpf}");
        }
    }

    #[test]
    fn about_one_contact_in_ten_finds_nobody() {
        let keys: Vec<String> = phone_keys().chain(email_keys()).collect();
        let misses = keys.iter().filter(|k| cpf_for_contact(k).is_none()).count();
        let share = misses as f64 / keys.len() as f64;
        assert!((0.06..=0.14).contains(&share), "share {share}");
    }

    #[test]
    fn different_contacts_mostly_get_different_cpfs() {
        let mut cpfs = found_cpfs();
        let total = cpfs.len();
        cpfs.sort();
        cpfs.dedup();
        assert!(cpfs.len() >= total - 2, "{} of {total}", cpfs.len());
    }

    #[test]
    fn about_one_cpf_in_twenty_is_unknown_to_the_work_api() {
        let cpfs = found_cpfs();
        let misses = cpfs
            .iter()
            .filter(|cpf| work_api_body(cpf)["status"] == 404)
            .count();
        let share = misses as f64 / cpfs.len() as f64;
        assert!((0.02..=0.09).contains(&share), "share {share}");
    }

    #[test]
    fn work_api_bodies_round_trip_through_the_parser() {
        for cpf in found_cpfs() {
            let body = work_api_body(&cpf);
            let answer = WorkApiAnswer::parse(&body).unwrap();
            if body["status"] == 404 {
                assert_eq!(
                    body,
                    json!({"status": 404, "reason": "Document not found."})
                );
                assert_eq!(answer, WorkApiAnswer::NotFound);
                continue;
            }
            let WorkApiAnswer::Found(person) = answer else {
                panic!("expected a person for a 200 body");
            };
            assert_eq!(person.cpf.as_str(), cpf);
            assert!(person.name.is_some() && person.mother_name.is_some());
            assert!(matches!(
                person.sex.as_deref(),
                Some("Feminino" | "Masculino")
            ));
            assert!(person.income.is_some() && person.credit_score.is_some());
            assert!((1..=3).contains(&person.emails.len()));
            assert!((1..=3).contains(&person.phones.len()));
            assert_eq!(person.addresses.len(), 1);
            assert!(person.companies.len() <= 1);
            for email in &person.emails {
                assert!(
                    email.address.ends_with("@example.com")
                        || email.address.ends_with("@example.org"),
                    "generated email outside example domains"
                );
            }
            for phone in &person.phones {
                assert!(matches!(phone.number.len(), 10 | 11));
            }
            assert!(person.phones[0].number.len() == 11);
            assert_eq!(person.addresses[0].cep.as_ref().map(String::len), Some(8));
            for company in &person.companies {
                assert!(cnpj_is_valid(&company.cnpj), "{}", company.cnpj);
            }
        }
    }

    #[test]
    fn some_demo_people_have_a_company_and_some_have_whatsapp() {
        let bodies: Vec<Value> = found_cpfs().iter().map(|c| work_api_body(c)).collect();
        let with_company = bodies
            .iter()
            .filter(|b| b["empresas"].as_array().is_some_and(|a| !a.is_empty()))
            .count();
        let with_whatsapp = bodies
            .iter()
            .filter(|b| b["telefones"][0]["whatsapp"] == "SIM")
            .count();
        assert!(with_company > bodies.len() / 5, "{with_company}");
        assert!(with_whatsapp > bodies.len() / 2, "{with_whatsapp}");
    }

    #[test]
    fn work_api_bodies_have_every_field_of_the_real_fixture() {
        let fixture: Value = serde_json::from_str(PERSON_FIXTURE).unwrap();
        let body = found_cpfs()
            .iter()
            .map(|c| work_api_body(c))
            .find(|b| b["empresas"].as_array().is_some_and(|a| !a.is_empty()))
            .expect("some person has a company");
        let paths: &[&[&str]] = &[
            &[],
            &["DadosBasicos"],
            &["DadosEconomicos"],
            &["DadosEconomicos", "poderAquisitivo"],
            &["DadosEconomicos", "score"],
            &["emails", "0"],
            &["telefones", "0"],
            &["enderecos", "0"],
            &["empresas", "0"],
            &["parentes", "0"],
            &["profissao"],
        ];
        for path in paths {
            let pick = |v: &Value| {
                path.iter()
                    .fold(v.clone(), |v, k| match k.parse::<usize>() {
                        Ok(i) => v[i].clone(),
                        Err(_) => v[*k].clone(),
                    })
            };
            let (expected, actual) = (pick(&fixture), pick(&body));
            let expected = expected.as_object().expect("fixture object");
            let actual = actual.as_object().expect("generated object");
            for key in expected.keys() {
                assert!(actual.contains_key(key), "{path:?} lacks {key}");
            }
        }
    }

    #[test]
    fn the_quick_start_phone_and_email_are_one_person_named_like_the_lead() {
        let phone = diretrix_body("+5511987654321");
        let email = diretrix_body("maria.souza@example.com");
        assert_eq!(phone, email);
        assert_eq!(phone[0]["cpf"], QUICK_START_CPF);
        assert_eq!(phone[0]["nome"], "MARIA APARECIDA SOUZA");
        let work = work_api_body(QUICK_START_CPF);
        assert_eq!(work["DadosBasicos"]["nome"], "MARIA APARECIDA SOUZA");
    }

    #[test]
    fn the_family_phone_lists_two_people_and_the_second_matches_the_documented_lead_name() {
        use crate::domain::name::{Match, choose};
        let body = serde_json::to_vec(&diretrix_body(FAMILY_PHONE)).unwrap();
        let candidates = crate::providers::diretrix::parse_answer(&body).unwrap();
        assert_eq!(candidates.len(), 2);
        let choice = choose(Some("Ana Paula Pereira"), &candidates).unwrap();
        assert_eq!((choice.index, choice.quality), (1, Match::Confirmed));
        let choice = choose(None, &candidates).unwrap();
        assert_eq!((choice.index, choice.quality), (0, Match::NoLeadName));
        for cpf in [FAMILY_FIRST_CPF, FAMILY_SECOND_CPF] {
            assert!(cpf_is_valid(cpf));
            assert_eq!(work_api_body(cpf)["status"], 200);
        }
        // The first candidate is what a lookup without a name answers.
        assert_eq!(
            cpf_for_contact(FAMILY_PHONE).as_deref(),
            Some(FAMILY_FIRST_CPF)
        );
    }

    #[test]
    fn diretrix_agrees_with_the_work_api_on_cpf_and_name() {
        for key in phone_keys().take(300).chain(email_keys().take(300)) {
            let body = diretrix_body(&key);
            let entries = body.as_array().expect("an array");
            match cpf_for_contact(&key) {
                None => assert!(entries.is_empty()),
                Some(cpf) => {
                    assert_eq!(entries.len(), 1);
                    assert_eq!(entries[0]["cpf"], cpf.as_str());
                    let work = work_api_body(&cpf);
                    if work["status"] == 200 {
                        assert_eq!(entries[0]["nome"], work["DadosBasicos"]["nome"]);
                    }
                }
            }
        }
    }
}
