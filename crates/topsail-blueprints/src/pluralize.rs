//! English plurals for `pluralize: true` URLs (`/users`), covering the
//! regular rules and the common irregular nouns.

const IRREGULAR: &[(&str, &str)] = &[
    ("person", "people"),
    ("man", "men"),
    ("woman", "women"),
    ("child", "children"),
    ("mouse", "mice"),
    ("goose", "geese"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("ox", "oxen"),
];
const UNCOUNTABLE: &[&str] = &[
    "sheep",
    "fish",
    "deer",
    "series",
    "species",
    "news",
    "equipment",
    "information",
    "data",
];

/// The plural of an identity.
pub fn pluralize(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if UNCOUNTABLE.contains(&lower.as_str()) {
        return word.to_owned();
    }
    if let Some((_, plural)) = IRREGULAR.iter().find(|(s, _)| *s == lower) {
        return (*plural).to_owned();
    }
    let consonant_y = lower.ends_with('y')
        && !lower.ends_with("ay")
        && !lower.ends_with("ey")
        && !lower.ends_with("oy")
        && !lower.ends_with("uy");
    if consonant_y {
        return format!("{}ies", &word[..word.len() - 1]);
    }
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        return format!("{word}es");
    }
    format!("{word}s")
}

#[cfg(test)]
mod tests {
    use super::pluralize;

    #[test]
    fn regular_and_irregular_plurals() {
        for (s, p) in [
            ("user", "users"),
            ("pet", "pets"),
            ("tag", "tags"),
            ("category", "categories"),
            ("key", "keys"),
            ("box", "boxes"),
            ("person", "people"),
            ("sheep", "sheep"),
        ] {
            assert_eq!(pluralize(s), p);
        }
    }
}
