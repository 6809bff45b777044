/*!
The set of models an app serves, checked as a whole: identities unique,
association targets registered, every `via` pointing at a field that points
back.
*/

use crate::model::{AssocKind, CollectionStorage, JoinTable, ModelDef, collection_storage};
use crate::typed::Model;

/// A model set that does not hang together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two models share an identity.
    #[error("two models have the identity `{0}`")]
    DuplicateIdentity(&'static str),
    /// An association points at a model that is not registered.
    #[error("`{model}.{field}` points at `{target}`, which is not registered")]
    UnregisteredTarget {
        /// The model.
        model: &'static str,
        /// The association field.
        field: &'static str,
        /// The target identity.
        target: &'static str,
    },
    /// A `via` names no association on the target, or one that does not
    /// point back.
    #[error(
        "`{model}.{field}` has `via = {via}`, but `{target}` has no association `{via}` pointing back at `{model}`"
    )]
    BadVia {
        /// The model.
        model: &'static str,
        /// The association field.
        field: &'static str,
        /// The target identity.
        target: &'static str,
        /// The `via` field name.
        via: &'static str,
    },
}

/// The models of an app.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    models: Vec<&'static ModelDef>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds model `M`.
    pub fn model<M: Model>(self) -> Self {
        self.def(M::def())
    }

    /// Adds a model by its metadata.
    pub fn def(mut self, def: &'static ModelDef) -> Self {
        if !self.models.iter().any(|m| std::ptr::eq(*m, def)) {
            self.models.push(def);
        }
        self
    }

    /// The models, in registration order.
    pub fn models(&self) -> &[&'static ModelDef] {
        &self.models
    }

    /// The model with this identity.
    pub fn get(&self, identity: &str) -> Option<&'static ModelDef> {
        self.models.iter().copied().find(|m| m.identity == identity)
    }

    /// Checks that the models hang together.
    pub fn validate(&self) -> Result<(), RegistryError> {
        for (i, m) in self.models.iter().enumerate() {
            if self.models[..i].iter().any(|o| o.identity == m.identity) {
                return Err(RegistryError::DuplicateIdentity(m.identity));
            }
        }
        for m in &self.models {
            for a in &m.assocs {
                let target = a.target();
                if !self.models.iter().any(|t| std::ptr::eq(*t, target)) {
                    return Err(RegistryError::UnregisteredTarget {
                        model: m.identity,
                        field: a.field,
                        target: target.identity,
                    });
                }
                if let AssocKind::Many { via: Some(via) } = a.kind {
                    let back = target
                        .assoc_by_field(via)
                        .filter(|b| std::ptr::eq(b.target(), *m));
                    let ok = match back.map(|b| b.kind) {
                        Some(AssocKind::One) => true,
                        Some(AssocKind::Many { via: Some(v) }) => v == a.field,
                        _ => false,
                    };
                    if !ok {
                        return Err(RegistryError::BadVia {
                            model: m.identity,
                            field: a.field,
                            target: target.identity,
                            via,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Every join table the models need, each once.
    pub fn join_tables(&self) -> Vec<(JoinTable, &'static ModelDef, &'static ModelDef)> {
        let mut out: Vec<(JoinTable, &'static ModelDef, &'static ModelDef)> = Vec::new();
        for m in &self.models {
            for a in m.assocs.iter().filter(|a| a.is_collection()) {
                if let CollectionStorage::Join(j) = collection_storage(m, a)
                    && !out.iter().any(|(o, ..)| o.table == j.table)
                {
                    out.push((j, m, a.target()));
                }
            }
        }
        out
    }
}
