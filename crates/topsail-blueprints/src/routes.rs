/*!
The one table of blueprint routes. Every route Sails binds for a model is a
row here: its family (REST or shortcut), method, path shape and action.
The axum routes and the static segments of the case-insensitive matcher are
both derived from it, so the two never disagree.
*/

use axum::http::Method;
use topsail_core::model::{AssocDef, ModelDef};

/// A blueprint action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Find,
    FindOne,
    Create,
    Update,
    Destroy,
    /// `DELETE /pet`: Sails binds it, and it always refuses.
    DestroyWithoutId,
    Populate,
    Add,
    Remove,
    Replace,
}

impl Action {
    /// Whether the action writes (every one but the reads).
    pub(crate) fn changes_data(self) -> bool {
        matches!(
            self,
            Action::Create
                | Action::Update
                | Action::Destroy
                | Action::Add
                | Action::Remove
                | Action::Replace
        )
    }

    /// The Sails action name (`pet/<name>` in policies).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Find => "find",
            Action::FindOne => "findOne",
            Action::Create => "create",
            Action::Update => "update",
            Action::Destroy | Action::DestroyWithoutId => "destroy",
            Action::Populate => "populate",
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Replace => "replace",
        }
    }

    /// Whether the action is bound for association `assoc`: populate for
    /// every association, add, remove and replace for collections only.
    fn binds(self, assoc: &AssocDef) -> bool {
        match self {
            Action::Populate => true,
            Action::Add | Action::Remove | Action::Replace => assoc.is_collection(),
            _ => false,
        }
    }
}

/// Sails' two route families, each switched on and off as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `GET /pet`, `PATCH /pet/:id`, ... (under `prefix` and `restPrefix`).
    Rest,
    /// `GET /pet/create?...`, `GET /pet/destroy/:id`, ... (under `prefix`).
    Shortcut,
    /// A shortcut Sails binds only while the REST routes are off (the
    /// shortcut populate, whose path is the REST populate's).
    ShortcutWithoutRest,
}

/// Where a route sits below a model's base path (`/pet`). Route parameters
/// carry the names Sails gives them: `id`, or `parentid` and `childid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `/pet`
    Model,
    /// `/pet/{id}`
    Record,
    /// `/pet/<verb>`
    Verb(&'static str),
    /// `/pet/<verb>/{id}`
    VerbRecord(&'static str),
    /// `/pet/{parentid}/<alias>`
    Assoc,
    /// `/pet/{parentid}/<alias>/{childid}`
    AssocChild,
    /// `/pet/{parentid}/<alias>/<verb>`
    AssocVerb(&'static str),
    /// `/pet/{parentid}/<alias>/<verb>/{childid}`
    AssocVerbChild(&'static str),
}

impl Shape {
    fn is_assoc(self) -> bool {
        matches!(
            self,
            Shape::Assoc | Shape::AssocChild | Shape::AssocVerb(_) | Shape::AssocVerbChild(_)
        )
    }

    /// Whether the path ends in a route parameter (Sails skips such GET
    /// routes for paths that look like a file name).
    pub(crate) fn ends_in_param(self) -> bool {
        matches!(
            self,
            Shape::Record | Shape::VerbRecord(_) | Shape::AssocChild | Shape::AssocVerbChild(_)
        )
    }

    /// The axum path below `base`, for association `alias` (assoc shapes).
    fn path(self, base: &str, alias: &str) -> String {
        match self {
            Shape::Model => base.to_owned(),
            Shape::Record => format!("{base}/{{id}}"),
            Shape::Verb(v) => format!("{base}/{v}"),
            Shape::VerbRecord(v) => format!("{base}/{v}/{{id}}"),
            Shape::Assoc => format!("{base}/{{parentid}}/{alias}"),
            Shape::AssocChild => format!("{base}/{{parentid}}/{alias}/{{childid}}"),
            Shape::AssocVerb(v) => format!("{base}/{{parentid}}/{alias}/{v}"),
            Shape::AssocVerbChild(v) => format!("{base}/{{parentid}}/{alias}/{v}/{{childid}}"),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub(crate) struct RouteDef {
    pub(crate) family: Family,
    pub(crate) method: Method,
    pub(crate) shape: Shape,
    pub(crate) action: Action,
}

const fn rest(method: Method, shape: Shape, action: Action) -> RouteDef {
    RouteDef {
        family: Family::Rest,
        method,
        shape,
        action,
    }
}

const fn shortcut(shape: Shape, action: Action) -> RouteDef {
    RouteDef {
        family: Family::Shortcut,
        method: Method::GET,
        shape,
        action,
    }
}

/// Every route Sails binds for a model.
pub(crate) const ROUTES: &[RouteDef] = &[
    rest(Method::GET, Shape::Model, Action::Find),
    rest(Method::GET, Shape::Record, Action::FindOne),
    rest(Method::POST, Shape::Model, Action::Create),
    rest(Method::PATCH, Shape::Record, Action::Update),
    // Deprecated in Sails 1.x, still bound.
    rest(Method::PUT, Shape::Record, Action::Update),
    rest(Method::DELETE, Shape::Model, Action::DestroyWithoutId),
    rest(Method::DELETE, Shape::Record, Action::Destroy),
    rest(Method::GET, Shape::Assoc, Action::Populate),
    rest(Method::PUT, Shape::AssocChild, Action::Add),
    rest(Method::DELETE, Shape::AssocChild, Action::Remove),
    rest(Method::PUT, Shape::Assoc, Action::Replace),
    shortcut(Shape::Verb("find"), Action::Find),
    shortcut(Shape::VerbRecord("find"), Action::FindOne),
    shortcut(Shape::Verb("create"), Action::Create),
    shortcut(Shape::VerbRecord("update"), Action::Update),
    shortcut(Shape::VerbRecord("destroy"), Action::Destroy),
    shortcut(Shape::AssocVerbChild("add"), Action::Add),
    shortcut(Shape::AssocVerb("replace"), Action::Replace),
    shortcut(Shape::AssocVerbChild("remove"), Action::Remove),
    RouteDef {
        family: Family::ShortcutWithoutRest,
        method: Method::GET,
        shape: Shape::Assoc,
        action: Action::Populate,
    },
];

/// One bound route: a row of the table for one model (and association).
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub(crate) def: &'static RouteDef,
    pub(crate) model: &'static ModelDef,
    pub(crate) assoc: Option<&'static AssocDef>,
    pub(crate) path: String,
}

/// The URL bases of a model: `(rest, shortcut)`.
pub(crate) struct Bases {
    pub(crate) rest: String,
    pub(crate) shortcut: String,
}

/// Every route of `model` in the enabled families, in table order.
pub(crate) fn bind(
    model: &'static ModelDef,
    bases: &Bases,
    enabled: impl Fn(Family) -> bool,
) -> Vec<Bound> {
    let mut out: Vec<Bound> = Vec::new();
    for def in ROUTES.iter().filter(|d| enabled(d.family)) {
        let base = match def.family {
            Family::Rest => &bases.rest,
            Family::Shortcut | Family::ShortcutWithoutRest => &bases.shortcut,
        };
        let targets: Vec<Option<&'static AssocDef>> = if def.shape.is_assoc() {
            model
                .assocs
                .iter()
                .filter(|a| def.action.binds(a))
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        for assoc in targets {
            let path = def.shape.path(base, assoc.map_or("", |a| a.name));
            out.push(Bound {
                def,
                model,
                assoc,
                path,
            });
        }
    }
    out
}

/// The literal segments of `path` (not its `{parameters}`).
pub(crate) fn static_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;
    use topsail_core::model::{AssocDef, AssocKind, AttrDef, AttrType, Hooks, PkKind};

    fn model(identity: &'static str, assocs: Vec<AssocDef>) -> ModelDef {
        ModelDef {
            identity,
            table: identity,
            pk: "id",
            pk_kind: PkKind::AutoIncrement,
            attrs: vec![AttrDef::new("id", "id", "id", AttrType::Integer)],
            assocs,
            hooks: Hooks::default(),
            strict: false,
            require_if_match: false,
        }
    }

    fn assoc(name: &'static str, target: fn() -> &'static ModelDef, kind: AssocKind) -> AssocDef {
        AssocDef {
            field: name,
            name,
            column: name,
            target,
            kind,
        }
    }

    fn user() -> &'static ModelDef {
        static USER: LazyLock<ModelDef> = LazyLock::new(|| {
            model(
                "user",
                vec![assoc("pets", pet, AssocKind::Many { via: Some("owner") })],
            )
        });
        &USER
    }

    fn pet() -> &'static ModelDef {
        static PET: LazyLock<ModelDef> =
            LazyLock::new(|| model("pet", vec![assoc("owner", user, AssocKind::One)]));
        &PET
    }

    fn routes(rest: bool, shortcuts: bool) -> Vec<(String, String, &'static str)> {
        let bases = Bases {
            rest: "/api/v1/user".into(),
            shortcut: "/api/user".into(),
        };
        bind(user(), &bases, |f| match f {
            Family::Rest => rest,
            Family::Shortcut => shortcuts,
            Family::ShortcutWithoutRest => shortcuts && !rest,
        })
        .into_iter()
        .map(|b| (b.def.method.to_string(), b.path, b.def.action.name()))
        .collect()
    }

    #[test]
    fn rest_routes_are_sails_routes() {
        let r = routes(true, false);
        for want in [
            ("GET", "/api/v1/user", "find"),
            ("GET", "/api/v1/user/{id}", "findOne"),
            ("POST", "/api/v1/user", "create"),
            ("PATCH", "/api/v1/user/{id}", "update"),
            ("PUT", "/api/v1/user/{id}", "update"),
            ("DELETE", "/api/v1/user/{id}", "destroy"),
            ("GET", "/api/v1/user/{parentid}/pets", "populate"),
            ("PUT", "/api/v1/user/{parentid}/pets/{childid}", "add"),
            ("DELETE", "/api/v1/user/{parentid}/pets/{childid}", "remove"),
            ("PUT", "/api/v1/user/{parentid}/pets", "replace"),
        ] {
            assert!(
                r.contains(&(want.0.into(), want.1.into(), want.2)),
                "{want:?} in {r:?}"
            );
        }
        assert!(r.iter().all(|(_, p, _)| !p.contains("/find")));
    }

    #[test]
    fn shortcut_populate_is_bound_once_and_only_without_rest() {
        let both = routes(true, true);
        let populate = |r: &[(String, String, &str)]| {
            r.iter()
                .filter(|(m, p, _)| m == "GET" && p.ends_with("/{parentid}/pets"))
                .count()
        };
        assert_eq!(populate(&both), 1);
        let shortcuts = routes(false, true);
        assert!(shortcuts.contains(&(
            "GET".into(),
            "/api/user/{parentid}/pets".into(),
            "populate"
        )));
        assert!(shortcuts.contains(&(
            "GET".into(),
            "/api/user/{parentid}/pets/add/{childid}".into(),
            "add"
        )));
        assert!(shortcuts.iter().all(|(m, _, _)| m == "GET"));
    }

    #[test]
    fn to_one_associations_get_populate_only() {
        let bases = Bases {
            rest: "/pet".into(),
            shortcut: "/pet".into(),
        };
        let r = bind(pet(), &bases, |f| f != Family::ShortcutWithoutRest);
        let owner: Vec<_> = r
            .iter()
            .filter(|b| b.assoc.is_some_and(|a| a.name == "owner"))
            .map(|b| b.def.action)
            .collect();
        assert_eq!(owner, vec![Action::Populate]);
    }
}
