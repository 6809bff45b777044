/*!
The plan of one action: the ordered [`Effect`]s it causes. The low-level
steps (subscribe, watch, `_introduce`, one message) come first; then each
action's messages as Sails publishes them (`create`, `update`, `destroy`,
`add`, `remove`, `replace`), so the engine only says what changed.
*/

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Actor, Effect, Guard, Nested, class_room, record_room};
use crate::access::Rules;
use crate::model::{AssocDef, AssocKind, ModelDef};
use crate::record::{Pk, Record};

/// What linking children to a parent through a collection changed.
#[derive(Debug)]
pub(crate) struct Linked {
    pub(crate) assoc: &'static AssocDef,
    /// Children that exist and are now linked, in the order given.
    pub(crate) linked: Vec<Pk>,
    /// `(child, old parent)` for children taken from another parent
    /// (one-to-many only).
    pub(crate) stolen: Vec<(Pk, Pk)>,
}

/// `record` as a client may receive it: messages go to sockets, so no
/// private attribute is ever in one (see [`crate::visibility`]).
fn visible(model: &ModelDef, mut record: Record) -> Record {
    crate::visibility::strip_private(model, &mut record);
    record
}

/// The guard of a message about `record`.
fn guard_of(model: &'static ModelDef, record: &Record, evict: bool, nested: Vec<Nested>) -> Guard {
    Guard {
        model,
        record: Arc::new(record.clone()),
        evict,
        nested,
        join: None,
    }
}

/// Builds the effect list of one operation.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    actor: &'a Actor,
    /// Decides which messages carry a [`Guard`].
    rules: &'a Rules,
    /// The socket omitted from broadcasts (the requester, unless mirroring).
    omit: Option<Arc<str>>,
    /// Rooms the actor already joins in this plan (a deep read can name
    /// the same room many times).
    joined: HashSet<String>,
    /// When the read this plan subscribes for began (see
    /// [`Effect::Join::read_at`]).
    read_at: Option<u64>,
    pub(crate) effects: Vec<Effect>,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(actor: &'a Actor, mirror: bool, rules: &'a Rules) -> Self {
        let omit = if mirror {
            None
        } else {
            actor.socket_id().cloned()
        };
        Plan {
            actor,
            rules,
            omit,
            joined: HashSet::new(),
            read_at: None,
            effects: Vec::new(),
        }
    }

    /// The plan of a read that began at `at` ([`super::now_us`], taken
    /// before its query).
    pub(crate) fn read_began(mut self, at: u64) -> Self {
        self.read_at = Some(at);
        self
    }

    /// Who made the request.
    pub(crate) fn actor(&self) -> &'a Actor {
        self.actor
    }

    /// Subscribes the requesting socket to records of `model`.
    pub(crate) fn subscribe<'p>(
        &mut self,
        model: &ModelDef,
        ids: impl IntoIterator<Item = &'p Pk>,
    ) {
        if let Some(socket) = self.actor.socket_id() {
            let rooms: Vec<String> = ids.into_iter().map(|id| record_room(model, id)).collect();
            if !rooms.is_empty() {
                self.push_join(socket.clone(), rooms);
            }
        }
    }

    /// Unsubscribes the requesting socket from a record.
    pub(crate) fn unsubscribe(&mut self, model: &ModelDef, id: &Pk) {
        if let Some(socket) = self.actor.socket_id() {
            let room = record_room(model, id);
            self.joined.remove(&room);
            self.effects.push(Effect::Leave {
                socket: socket.clone(),
                rooms: vec![room],
            });
        }
    }

    /// The requesting socket watches `model`'s class room.
    pub(crate) fn watch(&mut self, model: &ModelDef) {
        if let Some(socket) = self.actor.socket_id() {
            self.push_join(socket.clone(), vec![class_room(model)]);
        }
    }

    // Consecutive joins merge into one effect (one adapter call), and a
    // room already joined in this plan is not joined again.
    fn push_join(&mut self, socket: Arc<str>, rooms: Vec<String>) {
        let fresh: Vec<String> = rooms
            .into_iter()
            .filter(|r| self.joined.insert(r.clone()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        if let Some(Effect::Join {
            socket: s,
            rooms: r,
            ..
        }) = self.effects.last_mut()
            && *s == socket
        {
            r.extend(fresh);
            return;
        }
        self.effects.push(Effect::Join {
            socket,
            rooms: fresh,
            read_at: self.read_at,
        });
    }

    /// `_introduce`: watchers of `model` are subscribed to the new record
    /// (those who may read it, when `model` has a read rule).
    pub(crate) fn introduce(&mut self, model: &'static ModelDef, id: &Pk, record: &Record) {
        let guard = self
            .rules
            .read_rule(model)
            .map(|_| guard_of(model, record, false, Vec::new()));
        self.effects.push(Effect::AddMembers {
            source: class_room(model),
            dest: record_room(model, id),
            guard,
        });
    }

    /// The guard of a message about `record`, with the populated records of
    /// `populated` (`(payload key, record)`), or none when no model
    /// concerned has a read rule (then nothing is copied: this runs for
    /// every message).
    fn guarded(
        &self,
        model: &'static ModelDef,
        record: &Record,
        evict: bool,
        populated: &[(&'static str, &Record)],
    ) -> Option<Guard> {
        if self.rules.is_empty() {
            return None;
        }
        let nested = self.nested_of(model, populated);
        if self.rules.read_rule(model).is_none() && nested.is_empty() {
            return None;
        }
        Some(guard_of(model, record, evict, nested))
    }

    /// The `ETag` a findOne of `record` (populated by default) answers
    /// every client with, so an `updated` can carry it; `None` when a read
    /// rule on a model it populates may show clients different records
    /// (their tags differ, and one per recipient would cost a hash each).
    fn etag_for_all(&self, model: &'static ModelDef, record: &Record) -> Option<String> {
        let narrowed = model
            .assocs
            .iter()
            .any(|a| self.rules.read_rule(a.target()).is_some());
        (!narrowed).then(|| crate::etag::of_record(&visible(model, record.clone())))
    }

    /// The records populated into `populated` whose model has a read rule.
    fn nested_of(
        &self,
        model: &'static ModelDef,
        populated: &[(&'static str, &Record)],
    ) -> Vec<Nested> {
        let mut nested = Vec::new();
        for (key, rec) in populated {
            for assoc in model.assocs.iter() {
                let target = assoc.target();
                if self.rules.read_rule(target).is_none() {
                    continue;
                }
                let one = |index, record: &serde_json::Map<String, Value>| Nested {
                    key,
                    assoc: assoc.name,
                    index,
                    model: target,
                    record: record.clone(),
                };
                match rec.get(assoc.name) {
                    Some(Value::Object(r)) => nested.push(one(None, r)),
                    Some(Value::Array(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Value::Object(r) = item {
                                nested.push(one(Some(i), r));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        nested
    }

    /// `_retire`: watchers of `model` leave the record's room.
    pub(crate) fn retire(&mut self, model: &ModelDef, id: &Pk) {
        self.effects.push(Effect::RemoveMembers {
            source: class_room(model),
            dest: record_room(model, id),
        });
    }

    fn broadcast(&mut self, room: String, model: &ModelDef, payload: Value) {
        self.guarded_broadcast(room, model, payload, None);
    }

    fn guarded_broadcast(
        &mut self,
        room: String,
        model: &ModelDef,
        payload: Value,
        guard: Option<Guard>,
    ) {
        self.effects.push(Effect::Broadcast {
            room,
            event: model.event(),
            payload,
            omit: self.omit.clone(),
            guard,
        });
    }

    /// `created` to the class room. With a read rule on `model`, the
    /// watchers who receive it are also introduced to the record's room
    /// (one check for both).
    pub(crate) fn created(&mut self, model: &'static ModelDef, id: &Pk, record: &Record) {
        let mut guard = self.guarded(model, record, false, &[("data", record)]);
        if self.rules.read_rule(model).is_some()
            && let Some(g) = guard.as_mut()
        {
            g.join = Some(record_room(model, id));
        }
        let data = Value::Object(visible(model, record.clone()));
        let payload = json!({"verb": "created", "data": data, "id": id.to_json()});
        self.guarded_broadcast(class_room(model), model, payload, guard);
    }

    /// `updated` with `previous` (the primary message of an update), to
    /// those who may read the record as it now is: watchers who just gained
    /// access join its room first, those who lost it leave.
    pub(crate) fn updated(
        &mut self,
        model: &'static ModelDef,
        id: &Pk,
        data: Record,
        record: &Record,
        previous: Record,
    ) {
        let guard = self.guarded(model, record, true, &[("previous", &previous)]);
        if self.rules.read_rule(model).is_some() {
            // Watchers who may read the record now (it was shared with
            // them) join its room, so this message and the next reach them.
            self.introduce(model, id, record);
        }
        let (data, previous) = (visible(model, data), visible(model, previous));
        let mut payload =
            json!({"verb": "updated", "data": data, "id": id.to_json(), "previous": previous});
        if let Some(tag) = self.etag_for_all(model, record) {
            payload["etag"] = Value::String(tag);
        }
        self.guarded_broadcast(record_room(model, id), model, payload, guard);
    }

    /// The reverse-side `updated`: `{<alias>: value}`, no `previous`.
    pub(crate) fn updated_reverse(&mut self, model: &ModelDef, id: &Pk, alias: &str, value: Value) {
        let mut data = serde_json::Map::new();
        data.insert(alias.to_owned(), value);
        let payload = json!({"verb": "updated", "data": data, "id": id.to_json()});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// `destroyed` with `previous`, to those who could read the record
    /// before it was destroyed.
    pub(crate) fn destroyed(&mut self, model: &'static ModelDef, id: &Pk, previous: &Record) {
        let guard = self.guarded(model, previous, false, &[("previous", previous)]);
        let shown = Value::Object(visible(model, previous.clone()));
        let payload = json!({"verb": "destroyed", "id": id.to_json(), "previous": shown});
        self.guarded_broadcast(record_room(model, id), model, payload, guard);
    }

    /// `addedTo` on a parent.
    pub(crate) fn added_to(&mut self, model: &ModelDef, id: &Pk, alias: &str, added: &Pk) {
        let payload = json!({"id": id.to_json(), "verb": "addedTo", "attribute": alias, "addedId": added.to_json()});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// `removedFrom` on a parent.
    pub(crate) fn removed_from(&mut self, model: &ModelDef, id: &Pk, alias: &str, removed: &Pk) {
        let payload = json!({"id": id.to_json(), "verb": "removedFrom", "attribute": alias, "removedId": removed.to_json()});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// The other side of a collection link: the child's to-one now points
    /// at `parent` (`updated`), or its collection holds it (`addedTo`);
    /// with `linked` false, the unlink (`updated` to null, `removedFrom`).
    fn reverse_of_collection(
        &mut self,
        model: &ModelDef,
        assoc: &AssocDef,
        parent: &Pk,
        child: &Pk,
        linked: bool,
    ) {
        let target = assoc.target();
        match model.inverse_of(assoc) {
            Some(inv) if matches!(inv.kind, AssocKind::One) => {
                let value = if linked {
                    parent.to_json()
                } else {
                    Value::Null
                };
                self.updated_reverse(target, child, inv.name, value);
            }
            Some(inv) if linked => self.added_to(target, child, inv.name, parent),
            Some(inv) => self.removed_from(target, child, inv.name, parent),
            None => {}
        }
    }

    /// The other side of a to-one key: record `id` of `model` joined
    /// (`linked`) or left the collection of `parent` that its `assoc` is
    /// the `via` of.
    fn reverse_of_to_one(
        &mut self,
        model: &ModelDef,
        assoc: &AssocDef,
        id: &Pk,
        parent: &Pk,
        linked: bool,
    ) {
        let Some(inv) = model.inverse_of(assoc) else {
            return;
        };
        if linked {
            self.added_to(assoc.target(), parent, inv.name, id);
        } else {
            self.removed_from(assoc.target(), parent, inv.name, id);
        }
    }

    /// `removedFrom` to the old parents of the children a link took.
    fn stolen(&mut self, model: &ModelDef, link: &Linked) {
        for (child, old) in &link.stolen {
            self.removed_from(model, old, link.assoc.name, child);
        }
    }

    /// A create's messages, in Sails' order: the reverse messages of the
    /// collections it linked, then of its to-one keys (the key order of a
    /// Waterline record), then `created`, then `removedFrom` for children
    /// taken from other parents. The requester is subscribed to the new
    /// record and the model's watchers are introduced to it.
    pub(crate) fn create(
        &mut self,
        model: &'static ModelDef,
        id: &Pk,
        values: &Record,
        record: &Record,
        links: &[Linked],
    ) {
        self.subscribe(model, [id]);
        if self.rules.read_rule(model).is_none() {
            // (With a read rule, `created` introduces those who may read it.)
            self.introduce(model, id, record);
        }
        for link in links {
            for child in &link.linked {
                self.reverse_of_collection(model, link.assoc, id, child, true);
            }
        }
        for assoc in model.assocs.iter().filter(|a| !a.is_collection()) {
            if let Some(parent) = values.get(assoc.name).and_then(Pk::from_json) {
                self.reverse_of_to_one(model, assoc, id, &parent, true);
            }
        }
        self.created(model, id, record);
        for link in links {
            self.stolen(model, link);
        }
    }

    /// An update's messages: the reverse messages of each to-one key that
    /// changed, then `updated` with the values set and the record as it
    /// was. (A collection set by an update is replaced silently, as in
    /// Sails.)
    pub(crate) fn update(
        &mut self,
        model: &'static ModelDef,
        id: &Pk,
        set: Record,
        record: &Record,
        previous: Record,
    ) {
        self.subscribe(model, [id]);
        for (key, new) in &set {
            let Some(assoc) = model.assoc(key) else {
                continue;
            };
            let target = assoc.target();
            let old = previous
                .get(key.as_str())
                .and_then(|v| target.key_of_link(v));
            let new = Pk::from_json(new);
            if old == new {
                continue;
            }
            if let Some(old) = &old {
                self.reverse_of_to_one(model, assoc, id, old, false);
            }
            if let Some(new) = &new {
                self.reverse_of_to_one(model, assoc, id, new, true);
            }
        }
        self.updated(model, id, set, record, previous);
    }

    /// A destroy's messages: `destroyed` with the record as it was, the
    /// watchers retired from its room, then the reverse messages of its
    /// to-one keys and of the children `unlinked` from its collections.
    pub(crate) fn destroy(
        &mut self,
        model: &'static ModelDef,
        id: &Pk,
        previous: &Record,
        unlinked: &[(&'static AssocDef, Vec<Pk>)],
    ) {
        self.unsubscribe(model, id);
        self.destroyed(model, id, previous);
        self.retire(model, id);
        for assoc in &model.assocs {
            let parent = previous.get(assoc.name);
            if let Some(parent) = parent.and_then(|v| assoc.target().key_of_link(v))
                && !assoc.is_collection()
            {
                self.reverse_of_to_one(model, assoc, id, &parent, false);
            }
            let children = unlinked
                .iter()
                .find(|(a, _)| std::ptr::eq(*a, assoc))
                .map(|(_, c)| c.as_slice())
                .unwrap_or_default();
            for child in children {
                self.reverse_of_collection(model, assoc, id, child, false);
            }
        }
    }

    /// `add`'s messages (Sails' `_publishAdd`): `addedTo` on the parent,
    /// the requester subscribed to the child, the reverse message, then
    /// `removedFrom` to the child's old parent.
    pub(crate) fn add(&mut self, model: &ModelDef, parent: &Pk, link: &Linked) {
        self.subscribe(model, [parent]);
        for child in &link.linked {
            self.added(model, link.assoc, parent, child);
        }
        self.stolen(model, link);
    }

    fn added(&mut self, model: &ModelDef, assoc: &AssocDef, parent: &Pk, child: &Pk) {
        self.added_to(model, parent, assoc.name, child);
        self.subscribe(assoc.target(), [child]);
        self.reverse_of_collection(model, assoc, parent, child, true);
    }

    /// `remove`'s messages (Sails' `_publishRemove`): `removedFrom` on the
    /// parent and the reverse message.
    pub(crate) fn remove(&mut self, model: &ModelDef, assoc: &AssocDef, parent: &Pk, child: &Pk) {
        self.removed_from(model, parent, assoc.name, child);
        self.reverse_of_collection(model, assoc, parent, child, false);
    }

    /// `replace`'s messages: an add for each child that was not linked
    /// `before`, a remove for each child `removed`, then `removedFrom` to
    /// the old parents of children taken from them.
    pub(crate) fn replace(
        &mut self,
        model: &ModelDef,
        parent: &Pk,
        before: &[Pk],
        removed: &[Pk],
        link: &Linked,
    ) {
        self.subscribe(model, [parent]);
        let had: HashSet<&Pk> = before.iter().collect();
        for child in link.linked.iter().filter(|c| !had.contains(c)) {
            self.added(model, link.assoc, parent, child);
        }
        for child in removed {
            self.remove(model, link.assoc, parent, child);
        }
        self.stolen(model, link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pet, user};

    #[test]
    fn room_names_are_sails_names() {
        assert_eq!(record_room(user(), &Pk::Int(1)), "sails_model_user_1:user");
        assert_eq!(
            record_room(pet(), &Pk::Str("a".into())),
            "sails_model_pet_a:pet"
        );
        assert_eq!(class_room(pet()), "sails_model_create_pet");
    }

    #[test]
    fn only_socket_actors_are_subscribed_and_omitted() {
        let http = Actor::http();
        let rules = Rules::new();
        let mut plan = Plan::new(&http, false, &rules);
        plan.subscribe(user(), [&Pk::Int(1)]);
        plan.watch(user());
        plan.created(user(), &Pk::Int(1), &Record::new());
        assert!(matches!(
            plan.effects.as_slice(),
            [Effect::Broadcast { omit: None, .. }]
        ));

        let socket = Actor::socket("S");
        let mut plan = Plan::new(&socket, false, &rules);
        plan.subscribe(user(), [&Pk::Int(1), &Pk::Int(2)]);
        plan.watch(user());
        plan.watch(user());
        plan.removed_from(user(), &Pk::Int(1), "pets", &Pk::Int(7));
        assert_eq!(
            plan.effects,
            vec![
                Effect::Join {
                    socket: "S".into(),
                    rooms: vec![
                        "sails_model_user_1:user".into(),
                        "sails_model_user_2:user".into(),
                        "sails_model_create_user".into()
                    ],
                    read_at: None,
                },
                Effect::Broadcast {
                    room: "sails_model_user_1:user".into(),
                    event: "user",
                    payload: json!({"id": 1, "verb": "removedFrom", "attribute": "pets", "removedId": 7}),
                    omit: Some("S".into()),
                    guard: None,
                },
            ],
            "consecutive joins merge, without duplicates"
        );
        let mut mirrored = Plan::new(&socket, true, &rules);
        mirrored.destroyed(pet(), &Pk::Int(3), &Record::new());
        assert!(
            matches!(
                mirrored.effects.as_slice(),
                [Effect::Broadcast { omit: None, .. }]
            ),
            "mirror sends the requester its own messages"
        );
    }
}
