//! Hand-built model definitions for the unit tests of this crate (the
//! derive cannot be used here: it emits paths through the facade).

use std::sync::LazyLock;

use crate::model::{
    AssocDef, AssocKind, AttrDef, AttrType, AutoTimestamp, Hooks, ModelDef, PkKind, Rule,
};

fn base(identity: &'static str) -> Vec<AttrDef> {
    let mut created = AttrDef::new("created_at", "createdAt", "created_at", AttrType::Integer);
    created.auto = Some(AutoTimestamp::CreatedAt);
    let mut updated = AttrDef::new("updated_at", "updatedAt", "updated_at", AttrType::Integer);
    updated.auto = Some(AutoTimestamp::UpdatedAt);
    let _ = identity;
    vec![
        AttrDef::new("id", "id", "id", AttrType::Integer),
        created,
        updated,
    ]
}

static USER: LazyLock<ModelDef> = LazyLock::new(|| {
    let mut attrs = base("user");
    let mut name = AttrDef::new("name", "name", "name", AttrType::String);
    name.required = true;
    let mut email = AttrDef::new("email", "email", "email", AttrType::String);
    email.required = true;
    email.unique = true;
    email.rules.push(Rule::IsEmail);
    attrs.extend([
        name,
        email,
        AttrDef::new("age", "age", "age", AttrType::Number),
    ]);
    ModelDef {
        identity: "user",
        table: "user",
        pk: "id",
        pk_kind: PkKind::AutoIncrement,
        attrs,
        assocs: vec![AssocDef {
            field: "pets",
            name: "pets",
            column: "pets",
            target: pet,
            kind: AssocKind::Many { via: Some("owner") },
        }],
        hooks: Hooks::default(),
        strict: false,
        require_if_match: false,
    }
});

static PET: LazyLock<ModelDef> = LazyLock::new(|| {
    let mut attrs = base("pet");
    let mut name = AttrDef::new("name", "name", "name", AttrType::String);
    name.required = true;
    attrs.extend([
        name,
        AttrDef::new("species", "species", "species", AttrType::String),
    ]);
    ModelDef {
        identity: "pet",
        table: "pet",
        pk: "id",
        pk_kind: PkKind::AutoIncrement,
        attrs,
        assocs: vec![
            AssocDef {
                field: "owner",
                name: "owner",
                column: "owner",
                target: user,
                kind: AssocKind::One,
            },
            AssocDef {
                field: "tags",
                name: "tags",
                column: "tags",
                target: tag,
                kind: AssocKind::Many { via: Some("pets") },
            },
        ],
        hooks: Hooks::default(),
        strict: false,
        require_if_match: false,
    }
});

static TAG: LazyLock<ModelDef> = LazyLock::new(|| {
    let mut attrs = base("tag");
    let mut label = AttrDef::new("label", "label", "label", AttrType::String);
    label.required = true;
    label.unique = true;
    attrs.push(label);
    ModelDef {
        identity: "tag",
        table: "tag",
        pk: "id",
        pk_kind: PkKind::AutoIncrement,
        attrs,
        assocs: vec![AssocDef {
            field: "pets",
            name: "pets",
            column: "pets",
            target: pet,
            kind: AssocKind::Many { via: Some("tags") },
        }],
        hooks: Hooks::default(),
        strict: false,
        require_if_match: false,
    }
});

pub(crate) fn user() -> &'static ModelDef {
    &USER
}
pub(crate) fn pet() -> &'static ModelDef {
    &PET
}
pub(crate) fn tag() -> &'static ModelDef {
    &TAG
}

#[test]
fn the_test_models_hang_together() {
    let r = crate::Registry::new().def(user()).def(pet()).def(tag());
    assert_eq!(r.validate(), Ok(()));
    let joins = r.join_tables();
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].0.table, "pet_tags__tag_pets");
}

#[test]
fn a_via_that_does_not_point_back_is_refused() {
    let r = crate::Registry::new().def(user()).def(pet());
    assert!(matches!(
        r.validate(),
        Err(crate::RegistryError::UnregisteredTarget { target: "tag", .. })
    ));
}
