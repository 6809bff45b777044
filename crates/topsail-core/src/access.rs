/*!
Who may see and change what: the [`Principal`] an app identified, and the
per-model [`Rules`] written in terms of it.

A read rule is declared once, as a function from the principal to an
[`Access`]: all records, none, or those matching a small condition over
the record's attributes ("owner is me, or shared is true"). The same
condition is used twice, so the two can never disagree:

- as a SQL filter, ANDed into every read a client makes (`find`, `findOne`,
  `count`, the populate action, and each association populated into
  another model's records);
- in memory, per recipient, on every published message: a condition over
  a record in hand needs no database read.

Conditions are equalities and `in` lists over scalar attributes and to-one
keys, combined with `and`/`or`: exactly the comparisons SQL and a JSON
record agree on (no collation, no pattern, no range over text).
*/

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::criteria::Criteria;
use crate::error::{Error, Result, StoreError};
use crate::model::ModelDef;
use crate::query::Filter;
use crate::record::Record;
use crate::typed::Model;

/// Equality of two erased principals of one type.
type SameFn = fn(&dyn Any, &dyn Any) -> bool;

/// Who is asking, as the app identified them: anonymous, or a value of the
/// app's own type (an account, a token's claims), optionally until an
/// instant (a session's expiry), after which it reads as anonymous.
#[derive(Clone, Default)]
pub struct Principal {
    who: Option<Arc<dyn Any + Send + Sync>>,
    /// `P`'s equality, over the erased values.
    same: Option<SameFn>,
    until: Option<Instant>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("anonymous", &self.is_anonymous())
            .finish_non_exhaustive()
    }
}

/// Two principals are equal when both are anonymous, or both hold equal
/// values of the same type: a request identifying the same account again
/// is no change of principal, even when its session's expiry moved on.
impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        if self.is_anonymous() || other.is_anonymous() {
            return self.is_anonymous() && other.is_anonymous();
        }
        match (&self.who, &other.who, self.same) {
            (Some(a), Some(b), Some(same)) => same(&**a, &**b),
            _ => false,
        }
    }
}

impl Eq for Principal {}

impl Principal {
    /// Nobody signed in.
    pub fn anonymous() -> Self {
        Principal::default()
    }

    /// `who`, the app's own description of the caller.
    pub fn new<P: Any + Send + Sync + PartialEq>(who: P) -> Self {
        fn same<P: Any + PartialEq>(a: &dyn Any, b: &dyn Any) -> bool {
            matches!((a.downcast_ref::<P>(), b.downcast_ref::<P>()), (Some(a), Some(b)) if a == b)
        }
        Principal {
            who: Some(Arc::new(who)),
            same: Some(same::<P>),
            until: None,
        }
    }

    /// The same principal, anonymous from `instant` on (a session's expiry
    /// reaches connected sockets without a request of theirs).
    pub fn until(mut self, instant: Instant) -> Self {
        self.until = Some(instant);
        self
    }

    /// The app's value, if the principal is of type `P` and not expired.
    pub fn get<P: Any>(&self) -> Option<&P> {
        if self.until.is_some_and(|t| Instant::now() >= t) {
            return None;
        }
        self.who.as_deref()?.downcast_ref()
    }

    /// Whether nobody (or nobody any more) is signed in.
    pub fn is_anonymous(&self) -> bool {
        self.who.is_none() || self.until.is_some_and(|t| Instant::now() >= t)
    }
}

/// The principal a socket was last identified as, shared by its requests
/// (the identity layer sets it) and by the delivery of messages to it
/// (which reads it, per recipient, with no database read). It keeps what
/// each rule answered for it, so a message to ten thousand sockets does
/// not run the rule ten thousand times per socket's lifetime, only once.
#[derive(Debug, Clone, Default)]
pub struct PrincipalSlot(Arc<std::sync::RwLock<Slot>>);

#[derive(Debug, Default)]
struct Slot {
    principal: Principal,
    /// Per model (by address: one comparison, not a string's): the rule's
    /// answer, and whether the principal had expired when it was asked.
    /// The first model's is kept inline: a delivery reads it for each
    /// recipient, and another allocation would be one more cache miss each.
    first: Option<Answer>,
    more: Vec<Answer>,
}

type Answer = (usize, bool, Access);

impl Slot {
    fn answer(&self, key: usize, expired: bool) -> Option<&Access> {
        std::iter::once(&self.first)
            .flatten()
            .chain(&self.more)
            .find(|(m, e, _)| *m == key && *e == expired)
            .map(|(_, _, a)| a)
    }

    fn keep(&mut self, answer: Answer) {
        let key = answer.0;
        if self.first.as_ref().is_none_or(|(m, _, _)| *m == key) {
            self.first = Some(answer);
        } else {
            self.more.retain(|(m, _, _)| *m != key);
            self.more.push(answer);
        }
    }

    fn forget(&mut self) {
        self.first = None;
        self.more.clear();
    }
}

impl PrincipalSlot {
    /// The principal now.
    pub fn get(&self) -> Principal {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .principal
            .clone()
    }

    /// Sets the principal; true when it changed (another account, signed
    /// in or out). A new principal forgets the rules' answers.
    pub fn set(&self, principal: Principal) -> bool {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = slot.principal != principal;
        if changed {
            slot.forget();
        }
        slot.principal = principal;
        changed
    }

    /// Reads the principal in place (no clone).
    pub fn with<T>(&self, f: impl FnOnce(&Principal) -> T) -> T {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()).principal)
    }

    /// Whether the principal may read `record` of `model` under `rules`:
    /// the rule runs once per principal (again once it expires), then its
    /// answer is kept.
    pub fn allows(&self, rules: &Rules, model: &'static ModelDef, record: &Record) -> bool {
        self.reads(rules, &Fields::new(model, record))
    }

    /// [`PrincipalSlot::allows`] for a record whose compared values are
    /// looked up once for many principals (a message's recipients).
    pub fn reads(&self, rules: &Rules, fields: &Fields<'_>) -> bool {
        let key = std::ptr::from_ref(fields.model) as usize;
        {
            let slot = self.0.read().unwrap_or_else(|e| e.into_inner());
            let expired = slot.principal.is_anonymous();
            if let Some(a) = slot.answer(key, expired) {
                return a.matches(fields);
            }
        }
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        let expired = slot.principal.is_anonymous();
        let answer = rules.readable(fields.model, &slot.principal);
        let allowed = answer.matches(fields);
        slot.keep((key, expired, answer));
        allowed
    }
}

/// A record as a condition reads it, for judging it against many
/// principals: each value a condition compares (an attribute, or a to-one's
/// key) is looked up in the record once and then reused, so a message to
/// ten thousand recipients hashes the attribute's name once, not once per
/// recipient.
#[derive(Debug)]
pub struct Fields<'r> {
    model: &'r ModelDef,
    record: &'r Record,
    /// The values looked up so far, by attribute (the names come from the
    /// app's rules, so a handful at most). Kept in place, not on the heap:
    /// a single check (a populated record in an answer, per row) allocates
    /// nothing.
    seen: std::cell::RefCell<[Option<(&'static str, &'r Value)>; FIELDS_KEPT]>,
}

/// How many compared values [`Fields`] keeps; a rule comparing more
/// attributes looks the others up each time.
const FIELDS_KEPT: usize = 4;

impl<'r> Fields<'r> {
    /// `record` of `model`, as read or as published: a to-one is its key
    /// or the populated record.
    pub fn new(model: &'r ModelDef, record: &'r Record) -> Self {
        Fields {
            model,
            record,
            seen: std::cell::RefCell::default(),
        }
    }

    /// The value a condition on `attr` compares.
    fn get(&self, attr: &'static str) -> &'r Value {
        let mut seen = self.seen.borrow_mut();
        for kept in seen.iter_mut() {
            match kept {
                Some((a, v)) if *a == attr => return v,
                Some(_) => {}
                None => {
                    return kept
                        .insert((attr, compared(self.model, self.record, attr)))
                        .1;
                }
            }
        }
        compared(self.model, self.record, attr)
    }
}

/// Marks a request the socket layer makes only to identify a socket again
/// (after an answer set a cookie on it, or when the app asks): the
/// identity layer answers it at once, without running any route. Only
/// server code can put it in a request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct IdentifyOnly;

/// Which records of a model a principal may read (or change): all, none,
/// or those matching a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// Every record.
    All,
    /// No record.
    Nothing,
    /// Records whose attribute (or to-one key) equals the value.
    Eq(&'static str, Value),
    /// Records whose attribute (or to-one key) is one of the values.
    In(&'static str, Vec<Value>),
    /// Records matching every condition.
    And(Vec<Access>),
    /// Records matching any condition.
    Or(Vec<Access>),
}

impl Access {
    /// Records whose `attr` equals `value`.
    pub fn eq(attr: &'static str, value: impl Into<Value>) -> Access {
        Access::Eq(attr, value.into())
    }

    /// Records whose `attr` is one of `values`.
    pub fn one_of<V: Into<Value>>(
        attr: &'static str,
        values: impl IntoIterator<Item = V>,
    ) -> Access {
        Access::In(attr, values.into_iter().map(Into::into).collect())
    }

    /// Records matching `self` or `other`.
    pub fn or(self, other: Access) -> Access {
        match (self, other) {
            (Access::All, _) | (_, Access::All) => Access::All,
            (Access::Nothing, a) | (a, Access::Nothing) => a,
            (Access::Or(mut a), b) => {
                a.push(b);
                Access::Or(a)
            }
            (a, b) => Access::Or(vec![a, b]),
        }
    }

    /// Records matching `self` and `other`.
    pub fn and(self, other: Access) -> Access {
        match (self, other) {
            (Access::Nothing, _) | (_, Access::Nothing) => Access::Nothing,
            (Access::All, a) | (a, Access::All) => a,
            (Access::And(mut a), b) => {
                a.push(b);
                Access::And(a)
            }
            (a, b) => Access::And(vec![a, b]),
        }
    }

    /// The condition as a Waterline `where` clause.
    fn to_where(&self, model: &ModelDef) -> Value {
        let each = |list: &[Access]| list.iter().map(|a| a.to_where(model)).collect::<Vec<_>>();
        match self {
            Access::All => json!({ model.pk: {"nin": []} }),
            Access::Nothing => json!({ model.pk: {"in": []} }),
            Access::Eq(attr, v) => json!({ *attr: v }),
            Access::In(attr, vs) => json!({ *attr: {"in": vs} }),
            Access::And(all) => json!({"and": each(all)}),
            Access::Or(any) => json!({"or": each(any)}),
        }
    }

    /// The condition as the SQL filter of a read of `model`. A condition
    /// that names no attribute of the model is the app's mistake: an error
    /// answered 500 and logged, never a 400 blaming the client.
    pub fn to_filter(&self, model: &'static ModelDef) -> Result<Filter> {
        match self {
            Access::All => return Ok(Filter::True),
            Access::Nothing => return Ok(Filter::False),
            _ => {}
        }
        let q = Criteria::new()
            .filter(self.to_where(model))
            .normalize(model)
            .map_err(|e| {
                let what = format!("the access rule of `{}` is invalid: {e}", model.identity);
                Error::Store(StoreError::Database(what.into()))
            })?;
        Ok(q.filter)
    }

    /// Whether `record` (of `model`, as read or as published: a to-one is
    /// its key or the populated record) matches the condition.
    pub fn allows(&self, model: &ModelDef, record: &Record) -> bool {
        self.matches(&Fields::new(model, record))
    }

    /// Whether the record `fields` reads matches the condition.
    pub fn matches(&self, fields: &Fields<'_>) -> bool {
        match self {
            Access::All => true,
            Access::Nothing => false,
            Access::Eq(attr, v) => same(fields.get(attr), v),
            Access::In(attr, vs) => {
                let got = fields.get(attr);
                vs.iter().any(|v| same(got, v))
            }
            Access::And(all) => all.iter().all(|a| a.matches(fields)),
            Access::Or(any) => any.iter().any(|a| a.matches(fields)),
        }
    }
}

/// The value a condition on `attr` compares: the attribute, or a to-one's
/// key whether the record holds the key or the populated record (null when
/// missing). Borrowed, not copied.
fn compared<'r>(model: &ModelDef, record: &'r Record, attr: &str) -> &'r Value {
    let v = record.get(attr).unwrap_or(&Value::Null);
    match (v, model.assoc(attr)) {
        (Value::Object(populated), Some(a)) if !a.is_collection() => {
            populated.get(a.target().pk).unwrap_or(&Value::Null)
        }
        _ => v,
    }
}

/// Equality as SQL sees it for the types a condition may compare: numbers
/// by value (`1` = `1.0`), a boolean also as SQLite's 0/1; null equals
/// nothing.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Bool(x), Value::Number(n)) | (Value::Number(n), Value::Bool(x)) => {
            n.as_i64() == Some(i64::from(*x))
        }
        _ => a == b,
    }
}

/// A read or write rule: the records of a model a principal may read or
/// change.
pub type Rule = Arc<dyn Fn(&Principal) -> Access + Send + Sync>;

/// What a create by a principal sets or refuses: it may change the values
/// (a note belongs to whoever creates it, whatever owner the client sent)
/// or refuse the create (answered 403).
pub type CreateRule =
    Arc<dyn Fn(&Principal, &mut Record) -> std::result::Result<(), Denied> + Send + Sync>;

/// Runs an app's rule. A rule that panics grants nothing (and is logged):
/// one recipient's failing rule never stops a delivery to the others, nor
/// the task delivering them.
fn run(rule: &Rule, model: &ModelDef, principal: &Principal) -> Access {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rule(principal))).unwrap_or_else(
        |_| {
            tracing::error!(
                model = model.identity,
                "an access rule panicked; it grants nothing"
            );
            Access::Nothing
        },
    )
}

/// A rule refused the request: answered 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied;

/// The rules of one model.
#[derive(Clone, Default)]
struct ModelRules {
    def: Option<&'static ModelDef>,
    read: Option<Rule>,
    write: Option<Rule>,
    create: Option<CreateRule>,
}

/// The access rules of an app, per model. A model without rules is public,
/// as in Sails; rules apply to clients (HTTP and socket requests), never
/// to app code (`Actor::Server`).
///
/// ```
/// use topsail_core::access::{Access, Principal, Rules};
/// # use topsail_core::{Model, ModelDef};
/// # fn rules<Note: Model>() -> Rules {
/// struct Me { id: i64 }
/// Rules::new()
///     // Read: my notes and shared ones; signed out, nothing.
///     .read::<Note>(|p: &Principal| match p.get::<Me>() {
///         Some(me) => Access::eq("owner", me.id).or(Access::eq("shared", true)),
///         None => Access::Nothing,
///     })
///     // Change: my notes only.
///     .write::<Note>(|p: &Principal| match p.get::<Me>() {
///         Some(me) => Access::eq("owner", me.id),
///         None => Access::Nothing,
///     })
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Rules {
    by_model: HashMap<&'static str, ModelRules>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_model.keys()).finish()
    }
}

impl Rules {
    /// No rules: every model public.
    pub fn new() -> Self {
        Rules::default()
    }

    fn of(&mut self, model: &'static ModelDef) -> &mut ModelRules {
        let rules = self.by_model.entry(model.identity).or_default();
        rules.def = Some(model);
        rules
    }

    /// The governed models.
    pub fn models(&self) -> impl Iterator<Item = &'static ModelDef> + '_ {
        self.by_model.values().filter_map(|r| r.def)
    }

    /// The records of `M` a principal may read: in answers, in what other
    /// models' records populate, and in published messages.
    pub fn read<M: Model>(
        mut self,
        rule: impl Fn(&Principal) -> Access + Send + Sync + 'static,
    ) -> Self {
        self.of(M::def()).read = Some(Arc::new(rule));
        self
    }

    /// The records of `M` a principal may change (update, destroy, add,
    /// remove, replace), also what an update or create may make of them.
    /// A record it may read but not change answers 403; one it may not
    /// read answers 404, as if it did not exist.
    pub fn write<M: Model>(
        mut self,
        rule: impl Fn(&Principal) -> Access + Send + Sync + 'static,
    ) -> Self {
        self.of(M::def()).write = Some(Arc::new(rule));
        self
    }

    /// Runs on the values of every client create of `M`, before they are
    /// validated and stored.
    pub fn on_create<M: Model>(
        mut self,
        rule: impl Fn(&Principal, &mut Record) -> std::result::Result<(), Denied>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.of(M::def()).create = Some(Arc::new(rule));
        self
    }

    /// Whether no model has a rule.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// Whether `model` has any rule.
    pub fn governs(&self, model: &ModelDef) -> bool {
        self.by_model.contains_key(model.identity)
    }

    fn rules_of(&self, model: &ModelDef) -> Option<&ModelRules> {
        self.by_model.get(model.identity)
    }

    /// What `principal` may read of `model` (everything without a rule).
    pub fn readable(&self, model: &ModelDef, principal: &Principal) -> Access {
        self.read_rule(model)
            .map_or(Access::All, |rule| run(rule, model, principal))
    }

    /// The read rule of `model`, if it has one.
    pub fn read_rule(&self, model: &ModelDef) -> Option<&Rule> {
        self.rules_of(model)?.read.as_ref()
    }

    /// What `principal` may change of `model` (what it may read, without a
    /// write rule).
    pub fn writable(&self, model: &ModelDef, principal: &Principal) -> Access {
        self.rules_of(model)
            .and_then(|r| r.write.as_ref())
            .map_or(Access::All, |rule| run(rule, model, principal))
    }

    /// Runs the create rule of `model` on `values`.
    pub fn on_create_of(
        &self,
        model: &ModelDef,
        principal: &Principal,
        values: &mut Record,
    ) -> std::result::Result<(), Denied> {
        match self.rules_of(model).and_then(|r| r.create.as_ref()) {
            Some(rule) => rule(principal, values),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pet;

    fn rec(v: Value) -> Record {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_condition_matches_keys_whether_populated_or_not() {
        let mine = Access::eq("owner", 7);
        assert!(mine.allows(pet(), &rec(json!({"id": 1, "owner": 7}))));
        assert!(mine.allows(
            pet(),
            &rec(json!({"id": 1, "owner": {"id": 7, "name": "Ann"}}))
        ));
        assert!(!mine.allows(pet(), &rec(json!({"id": 1, "owner": 8}))));
        assert!(!mine.allows(pet(), &rec(json!({"id": 1, "owner": null}))));
        assert!(
            !mine.allows(pet(), &rec(json!({"id": 1}))),
            "a missing value is null"
        );
    }

    #[test]
    fn and_or_all_and_nothing_combine_as_sql_does() {
        let r = rec(json!({"id": 3, "name": "Rex", "owner": 1}));
        let either = Access::eq("owner", 2).or(Access::one_of("id", [1, 3]));
        assert!(either.allows(pet(), &r));
        assert!(
            !Access::eq("owner", 1)
                .and(Access::eq("name", "Max"))
                .allows(pet(), &r)
        );
        assert!(Access::Nothing.or(Access::All).allows(pet(), &r));
        assert!(!Access::All.and(Access::Nothing).allows(pet(), &r));
        assert!(Access::eq("id", 3.0).allows(pet(), &r), "numbers by value");
    }

    #[test]
    fn a_condition_is_the_same_sql_filter() {
        assert_eq!(Access::All.to_filter(pet()).unwrap(), Filter::True);
        assert_eq!(Access::Nothing.to_filter(pet()).unwrap(), Filter::False);
        let f = Access::eq("owner", 7).to_filter(pet()).unwrap();
        assert!(matches!(f, Filter::Cmp { .. }), "{f:?}");
        let bad = Access::eq("nope", 1).to_filter(pet()).unwrap_err();
        assert!(
            matches!(bad, Error::Store(_)),
            "an app's mistake, not the client's"
        );
    }

    #[test]
    fn a_rule_that_panics_grants_nothing() {
        #[derive(Clone, Copy, PartialEq)]
        struct Odd(i64);
        let rules = Rules {
            by_model: [(
                pet().identity,
                ModelRules {
                    def: Some(pet()),
                    read: Some(Arc::new(|p: &Principal| match p.get::<Odd>() {
                        Some(Odd(n)) if n % 2 == 1 => panic!("a bug in the app's rule"),
                        _ => Access::All,
                    })),
                    ..ModelRules::default()
                },
            )]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            rules.readable(pet(), &Principal::new(Odd(1))),
            Access::Nothing
        );
        assert_eq!(
            rules.readable(pet(), &Principal::new(Odd(2))),
            Access::All,
            "the others go on"
        );
    }

    #[test]
    fn a_slot_keeps_each_models_answer_until_the_principal_changes() {
        use crate::testing::user;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = |runs: &Arc<AtomicUsize>| {
            let runs = runs.clone();
            move |p: &Principal| {
                runs.fetch_add(1, Ordering::Relaxed);
                p.get::<i64>()
                    .map_or(Access::Nothing, |me| Access::eq("owner", *me))
            }
        };
        let mut rules = Rules::new();
        for model in [pet(), user()] {
            rules.of(model).read = Some(Arc::new(counted(&runs)));
        }
        let slot = PrincipalSlot::default();
        slot.set(Principal::new(7_i64));
        let mine = rec(json!({"id": 1, "owner": 7}));
        for _ in 0..3 {
            assert!(slot.allows(&rules, pet(), &mine));
            assert!(slot.allows(&rules, user(), &mine));
        }
        assert_eq!(runs.load(Ordering::Relaxed), 2, "once per model");
        slot.set(Principal::new(8_i64));
        assert!(
            !slot.allows(&rules, pet(), &mine),
            "the new principal's answer"
        );
        assert!(!slot.allows(&rules, user(), &mine));
        assert_eq!(runs.load(Ordering::Relaxed), 4);
        slot.set(Principal::new(8_i64).until(Instant::now()));
        assert!(
            !slot.allows(&rules, pet(), &rec(json!({"id": 1, "owner": 8}))),
            "expired: anonymous"
        );
    }

    /// One judge serves every recipient of a message: the record's values
    /// are looked up once, yet each principal gets its own answer, the
    /// to-one key counts whether populated or not, and a populated record
    /// of a model without a read rule is never hidden.
    #[test]
    fn one_judge_answers_each_recipient_for_itself() {
        use crate::pubsub::{Guard, Nested};
        use crate::testing::{tag, user};
        let mut rules = Rules::new();
        // Pets: mine, or of a public species. Users: only myself.
        rules.of(pet()).read = Some(Arc::new(|p: &Principal| {
            let public = Access::one_of("species", ["cat", "dog"]);
            match p.get::<i64>() {
                Some(me) => Access::eq("owner", *me).or(public),
                None => public,
            }
        }));
        rules.of(user()).read = Some(Arc::new(|p: &Principal| {
            p.get::<i64>()
                .map_or(Access::Nothing, |me| Access::eq("id", *me))
        }));
        let owner = rec(json!({"id": 7, "name": "Ann"}));
        let guard = |species: &str| Guard {
            model: pet(),
            record: Arc::new(rec(
                json!({"id": 1, "species": species, "owner": {"id": 7, "name": "Ann"}}),
            )),
            evict: false,
            nested: vec![
                Nested {
                    key: "data",
                    assoc: "tags",
                    index: Some(0),
                    model: tag(),
                    record: rec(json!({"id": 3})),
                },
                Nested {
                    key: "data",
                    assoc: "owner",
                    index: None,
                    model: user(),
                    record: owner.clone(),
                },
            ],
            join: None,
        };
        let slot = |who: Option<i64>| {
            let slot = PrincipalSlot::default();
            slot.set(who.map_or_else(Principal::anonymous, Principal::new));
            slot
        };
        let (ann, bo, anon) = (slot(Some(7)), slot(Some(8)), slot(None));
        let (private, public) = (guard("snake"), guard("cat"));
        let judge = private.judge(&rules);
        // Bo's answer between Ann's two: no answer leaks into the next.
        assert_eq!(judge.seen_by(&ann), Some(0), "her own pet, her own record");
        assert_eq!(judge.seen_by(&bo), None, "not his, not public");
        assert_eq!(judge.seen_by(&ann), Some(0));
        assert_eq!(judge.seen_by(&anon), None);
        let judge = public.judge(&rules);
        assert_eq!(judge.seen_by(&ann), Some(0));
        // The owner (the second populated record, bit 1) is hidden from
        // Bo; the tag (a model without a rule) from nobody.
        assert_eq!(judge.seen_by(&bo), Some(0b10));
        assert_eq!(judge.seen_by(&anon), Some(0b10));
        // The same as each rule run afresh on each record.
        let afresh = |g: &Guard, p: &Principal| {
            let reads = |m: &'static ModelDef, r: &Record| rules.readable(m, p).allows(m, r);
            reads(g.model, &g.record).then(|| {
                (g.nested.iter().enumerate())
                    .filter(|(_, n)| !reads(n.model, &n.record))
                    .fold(0, |mask, (i, _)| mask | 1 << i)
            })
        };
        for slot in [&ann, &bo, &anon] {
            for g in [&private, &public] {
                assert_eq!(g.judge(&rules).seen_by(slot), afresh(g, &slot.get()));
            }
        }
    }

    #[test]
    fn an_expired_principal_reads_as_anonymous() {
        let p = Principal::new(5_i64);
        assert_eq!(p, Principal::new(5_i64), "equal by value");
        assert_ne!(p, Principal::new(6_i64));
        assert_ne!(p, Principal::anonymous());
        let slot = PrincipalSlot::default();
        assert!(!slot.set(Principal::anonymous()), "anonymous to anonymous");
        assert!(slot.set(p.clone()), "signed in");
        assert!(!slot.set(Principal::new(5_i64)), "the same account again");
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert!(
            !slot.set(Principal::new(5_i64).until(later)),
            "a session whose expiry moved on is the same principal"
        );
        assert_eq!(p.get::<i64>(), Some(&5));
        let gone = p.until(Instant::now());
        assert!(gone.is_anonymous());
        assert_eq!(gone.get::<i64>(), None);
    }
}
