/*!
What a client may see and touch of a model. A private attribute
(`#[model(private)]`) never reaches a client: not in an answer, not in a
published message (`data`, `previous`, populated records), and a client may
not select, filter or sort by it (that would make it an oracle:
`?passwordHash[startsWith]=$`), nor set it. A read-only attribute
(`#[model(read_only)]`) is never set by a client. App code (the typed API,
lifecycle callbacks) reads and writes both.
*/

use serde_json::{Map, Value};

use crate::criteria::Query;
use crate::error::{Error, Result};
use crate::model::{AttrDef, ModelDef};
use crate::query::{ColRef, Dir, Filter, Ident};
use crate::record::Record;

impl ModelDef {
    /// Whether the model has an attribute no client may see.
    pub fn has_private(&self) -> bool {
        self.attrs.iter().any(|a| a.private)
    }

    fn private_by_column(&self, column: &str) -> Option<&AttrDef> {
        self.attrs.iter().find(|a| a.private && a.column == column)
    }
}

/// A client's query: refused when it names a private attribute in `where`,
/// `sort` or `select` (of the model or of a populated one), as an unknown
/// attribute would be; otherwise made to leave private attributes out of
/// what it returns.
pub(crate) fn client_query(model: &'static ModelDef, q: &mut Query) -> Result<()> {
    refuse_private(model, &q.filter, &q.sort, q.select.as_deref())?;
    hide_private(model, &q.select, &mut q.omit);
    for p in &mut q.populate {
        let target = p.assoc.target();
        refuse_private(target, &p.filter, &p.sort, p.select.as_deref())?;
        hide_private(target, &p.select, &mut p.omit);
    }
    Ok(())
}

fn refuse_private(
    model: &ModelDef,
    filter: &Filter,
    sort: &[(Ident, Dir)],
    select: Option<&[&'static str]>,
) -> Result<()> {
    if !model.has_private() {
        return Ok(());
    }
    if let Some(a) = private_in_filter(model, filter) {
        return Err(Error::criteria(format!(
            "Invalid `where` clause: `{}` is not a recognized attribute for this model",
            a.name
        )));
    }
    if let Some(a) = sort.iter().find_map(|(c, _)| model.private_by_column(c)) {
        return Err(Error::criteria(format!(
            "Cannot sort by `{}`: it is not a recognized attribute",
            a.name
        )));
    }
    let private = |n: &str| model.attrs.iter().any(|a| a.private && a.name == n);
    if let Some(n) = select.and_then(|s| s.iter().find(|n| private(n))) {
        return Err(Error::criteria(format!(
            "Cannot `select` `{n}`: it is not a recognized attribute"
        )));
    }
    Ok(())
}

fn private_in_filter<'m>(model: &'m ModelDef, f: &Filter) -> Option<&'m AttrDef> {
    match f {
        Filter::True | Filter::False => None,
        Filter::And(parts) | Filter::Or(parts) => {
            parts.iter().find_map(|p| private_in_filter(model, p))
        }
        Filter::Cmp { col, .. }
        | Filter::In { col, .. }
        | Filter::Null { col, .. }
        | Filter::Like { col, .. } => match col {
            ColRef::Main(c) => model.private_by_column(c),
            ColRef::Join(_) => None,
        },
    }
}

/// Leaves the private attributes out of the projection (a `select` never
/// holds one: [`refuse_private`] saw to it).
fn hide_private(
    model: &ModelDef,
    select: &Option<Vec<&'static str>>,
    omit: &mut Vec<&'static str>,
) {
    if select.is_some() {
        return;
    }
    for a in model.attrs.iter().filter(|a| a.private) {
        if !omit.contains(&a.name) {
            omit.push(a.name);
        }
    }
}

/// Removes the private attributes of `model` from `record`, and those of
/// associated models from the records populated in it: what a client may
/// be sent.
pub fn strip_private(model: &ModelDef, record: &mut Record) {
    for a in model.attrs.iter().filter(|a| a.private) {
        record.remove(a.name);
    }
    for assoc in &model.assocs {
        let target = assoc.target();
        match record.get_mut(assoc.name) {
            Some(Value::Object(child)) => strip_private(target, child),
            Some(Value::Array(children)) => {
                for child in children {
                    if let Value::Object(child) = child {
                        strip_private(target, child);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A client's values for a create or an update, without what it may not
/// set: private and read-only attributes. Returns the names dropped (a
/// strict model refuses them).
pub(crate) fn client_values(model: &ModelDef, values: &mut Map<String, Value>) -> Vec<String> {
    let mut dropped = Vec::new();
    for a in model.attrs.iter().filter(|a| a.private || a.read_only) {
        if values.remove(a.name).is_some() {
            dropped.push(a.name.to_owned());
        }
    }
    dropped
}
