//! Snapshots of the expansion (diesel_derives' `tests/mod.rs`): each input
//! is expanded, pretty-printed and compared with `src/snapshots/`. A change
//! to the generated code shows up as a diff to review; accept it with
//! `INSTA_UPDATE=always cargo test -p topsail-macros`.

use crate::expand::expand;

fn expanded(input: syn::DeriveInput) -> String {
    match expand(&input) {
        Ok(tokens) => match syn::parse2::<syn::File>(tokens.clone()) {
            Ok(file) => prettyplease::unparse(&file),
            Err(e) => format!("unparsable expansion ({e}):\n{tokens}"),
        },
        Err(e) => e.into_iter().map(|e| format!("error: {e}\n")).collect(),
    }
}

#[test]
fn a_model_with_rules_and_a_to_one() {
    insta::assert_snapshot!(expanded(syn::parse_quote! {
        #[model(identity = "pet", strict)]
        struct Pet {
            id: i64,
            #[model(required, max_length = 40, regex = "^[A-Z]")]
            name: String,
            #[model(min = 0, max = 30.5, default = 1)]
            age: f64,
            #[model(is_in = ["dog", "cat"], default = "dog")]
            species: String,
            #[model(model = User, column = "owner_id")]
            owner: Option<Link<User>>,
            #[model(created_at)]
            created_at: i64,
        }
    }));
}

#[test]
fn collections_keys_and_hooks() {
    insta::assert_snapshot!(expanded(syn::parse_quote! {
        #[model(lifecycle, table = "people", crate = ::my::topsail)]
        struct Person {
            #[model(primary_key)]
            handle: String,
            #[model(unique, is_email, rename = "mail")]
            email: Option<String>,
            #[model(json)]
            tags: Vec<String>,
            #[model(collection = Pet, via = owner)]
            pets: Vec<Link<Pet>>,
            #[model(collection = Person)]
            friends: Vec<Link<Person>>,
        }
    }));
}

#[test]
fn every_mistake_is_reported_at_once() {
    insta::assert_snapshot!(expanded(syn::parse_quote! {
        #[model(identiy = "x", table = "a", table = "b")]
        struct Bad {
            #[model(requird, type = text, json, type = json)]
            name: String,
            #[model(model = "User", collection = User, via = a::b)]
            owner: Option<Link<User>>,
        }
    }));
}

#[test]
fn private_and_read_only_go_on_attributes_only() {
    insta::assert_snapshot!(expanded(syn::parse_quote! {
        struct Account {
            #[model(private)]
            id: i64,
            #[model(private, read_only)]
            password_hash: String,
            #[model(model = Team, private, read_only)]
            team: Option<Link<Team>>,
        }
    }));
}
