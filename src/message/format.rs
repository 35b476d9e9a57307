//! Display formatting of the values that have no domain type of their own: CEPs, CNPJs,
//! money, address lines and Portuguese lists. Each leaves a value it cannot read as given,
//! since provider data is shown, never refused. CPFs and phones are formatted by
//! `domain::Cpf` and `domain::phone`.

use crate::domain::person::PersonAddress;

/// "RUA DAS FLORES, 120 - AP 52, MOEMA - SAO PAULO/SP - CEP 04077-000", leaving out what is
/// missing; None when nothing is known.
pub(super) fn address_line(a: &PersonAddress) -> Option<String> {
    let mut place = a.street.clone().unwrap_or_default();
    if let Some(number) = &a.number {
        if place.is_empty() {
            place.push_str(number);
        } else {
            place = format!("{place}, {number}");
        }
    }
    if let Some(complement) = &a.complement {
        place = join_nonempty(&place, " - ", complement);
    }
    if let Some(district) = &a.district {
        place = join_nonempty(&place, ", ", district);
    }
    let city = match (&a.city, &a.uf) {
        (Some(city), Some(uf)) => format!("{city}/{uf}"),
        (Some(city), None) => city.clone(),
        (None, Some(uf)) => uf.clone(),
        (None, None) => String::new(),
    };
    let cep = a
        .cep
        .as_deref()
        .map(|c| format!("CEP {}", format_cep(c)))
        .unwrap_or_default();
    let parts: Vec<&str> = [place.as_str(), city.as_str(), cep.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" - "))
}

fn join_nonempty(head: &str, sep: &str, tail: &str) -> String {
    if head.is_empty() {
        tail.to_owned()
    } else {
        format!("{head}{sep}{tail}")
    }
}

/// Portuguese list: "a", "a e b", "a, b e c".
pub(super) fn join_pt(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} e {last}", init.join(", ")),
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// "04077000" -> "04077-000"; anything else unchanged.
pub(super) fn format_cep(digits: &str) -> String {
    if digits.len() == 8 && all_digits(digits) {
        format!("{}-{}", &digits[..5], &digits[5..])
    } else {
        digits.to_owned()
    }
}

/// "11222333000181" -> "11.222.333/0001-81"; anything else unchanged.
pub(super) fn format_cnpj(digits: &str) -> String {
    if digits.len() == 14 && all_digits(digits) {
        format!(
            "{}.{}.{}/{}-{}",
            &digits[..2],
            &digits[2..5],
            &digits[5..8],
            &digits[8..12],
            &digits[12..]
        )
    } else {
        digits.to_owned()
    }
}

/// "8500,50" / "8500.5" / "8500" / "8.500,50" -> "R$ 8.500,50"; anything else unchanged.
pub(super) fn format_money(raw: &str) -> String {
    let trimmed = raw.trim();
    let amount = trimmed
        .strip_prefix("R$")
        .map(str::trim_start)
        .unwrap_or(trimmed);
    match split_amount(amount) {
        Some((int, cents)) => format!("R$ {},{cents}", group_thousands(&int)),
        None => raw.to_owned(),
    }
}

/// Integer digits and two cent digits of an amount written either Brazilian style
/// ("8.500,50") or with a decimal point ("8500.5"); None for any other shape.
fn split_amount(s: &str) -> Option<(String, String)> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
    {
        return None;
    }
    let (int, frac) = if let Some((int, frac)) = s.rsplit_once(',') {
        // A comma is the decimal separator; any dots before it group thousands.
        (int, Some(frac))
    } else if let Some((int, frac)) = s.rsplit_once('.')
        && !int.contains('.')
        && frac.len() <= 2
    {
        // A single dot followed by one or two digits is a decimal point ("8500.5").
        (int, Some(frac))
    } else {
        // Otherwise dots can only be thousands separators ("1.500").
        (s, None)
    };

    let int_digits = if int.contains('.') {
        let mut groups = int.split('.');
        let first = groups.next()?;
        let valid = (1..=3).contains(&first.len())
            && all_digits(first)
            && groups.all(|g| g.len() == 3 && all_digits(g));
        if !valid {
            return None;
        }
        int.replace('.', "")
    } else {
        int.to_owned()
    };
    if int_digits.is_empty() || !all_digits(&int_digits) {
        return None;
    }
    let cents = match frac {
        None => "00".to_owned(),
        Some(f) if all_digits(f) && f.len() == 2 => f.to_owned(),
        Some(f) if all_digits(f) && f.len() == 1 => format!("{f}0"),
        Some(_) => return None,
    };
    let trimmed = int_digits.trim_start_matches('0');
    let int_digits = if trimmed.is_empty() { "0" } else { trimmed };
    Some((int_digits.to_owned(), cents))
}

/// "8500" -> "8.500".
fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_leave_out_missing_parts() {
        let base = PersonAddress::default();
        let cases = [
            (
                PersonAddress {
                    street: Some("RUA DAS FLORES".into()),
                    number: Some("120".into()),
                    city: Some("SAO PAULO".into()),
                    uf: Some("SP".into()),
                    ..base.clone()
                },
                Some("RUA DAS FLORES, 120 - SAO PAULO/SP"),
            ),
            (
                PersonAddress {
                    district: Some("MOEMA".into()),
                    cep: Some("04077000".into()),
                    ..base.clone()
                },
                Some("MOEMA - CEP 04077-000"),
            ),
            (
                PersonAddress {
                    street: Some("RUA A".into()),
                    complement: Some("FUNDOS".into()),
                    uf: Some("RJ".into()),
                    ..base.clone()
                },
                Some("RUA A - FUNDOS - RJ"),
            ),
            (base.clone(), None),
        ];
        for (address, expected) in cases {
            assert_eq!(address_line(&address).as_deref(), expected);
        }
    }

    #[test]
    fn ceps_are_formatted() {
        let cases = [
            ("04077000", "04077-000"),
            ("4077000", "4077000"),
            ("04077-000", "04077-000"),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_cep(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn cnpjs_are_formatted() {
        let cases = [
            ("11222333000181", "11.222.333/0001-81"),
            ("1122233300018", "1122233300018"),
            ("11.222.333/0001-81", "11.222.333/0001-81"),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_cnpj(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn money_is_formatted_in_reais() {
        let cases = [
            ("8500,50", "R$ 8.500,50"),
            ("8500.5", "R$ 8.500,50"),
            ("8500.50", "R$ 8.500,50"),
            ("8500", "R$ 8.500,00"),
            ("8.500,50", "R$ 8.500,50"),
            ("R$ 8500,50", "R$ 8.500,50"),
            ("1.500", "R$ 1.500,00"),
            ("1234567,8", "R$ 1.234.567,80"),
            ("0", "R$ 0,00"),
            ("950", "R$ 950,00"),
            ("0,5", "R$ 0,50"),
            ("007,00", "R$ 7,00"),
            ("abc", "abc"),
            ("8500,505", "8500,505"),
            ("85.00.0", "85.00.0"),
            ("-100", "-100"),
            (",50", ",50"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_money(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn lists_are_joined_the_portuguese_way() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join_pt(&s(&[])), "");
        assert_eq!(join_pt(&s(&["a"])), "a");
        assert_eq!(join_pt(&s(&["a", "b"])), "a e b");
        assert_eq!(join_pt(&s(&["a", "b", "c"])), "a, b e c");
    }
}
