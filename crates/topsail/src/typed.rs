//! The typed API for app code: the same actions the blueprints run, with
//! the same validation, transactions and pub-sub, returning model structs.

use std::marker::PhantomData;

use serde::Serialize;
use serde_json::Value;
use topsail_core::pubsub::{Effect, class_room, record_room};
use topsail_core::{Actor, Criteria, Engine, Error, Model, Pk, Populate, Result, UsageCode};

/// The actions of model `M`, from [`Topsail::model`](crate::Topsail::model).
///
/// By default the actor is the server itself: nobody is subscribed or
/// omitted. Pass a socket's [`Actor`] with [`Models::actor`] to act on its
/// behalf, as a blueprint action would.
#[derive(Debug)]
pub struct Models<'a, M> {
    engine: &'a Engine,
    actor: Actor,
    _model: PhantomData<fn() -> M>,
}

fn decode<M: Model>(r: topsail_core::Record) -> Result<M> {
    topsail_core::from_projected(r).map_err(Error::from)
}

/// The values an app passes, as the JSON object a client would send.
fn to_values(values: impl Serialize, code: UsageCode) -> Result<Value> {
    serde_json::to_value(values)
        .map_err(|e| Error::usage(code, format!("The values could not be serialized: {e}")))
}

impl<'a, M: Model> Models<'a, M> {
    /// The typed actions of `M` over `engine` (`Topsail::model` gives
    /// them over the app's engine).
    pub fn new(engine: &'a Engine) -> Self {
        Models {
            engine,
            actor: Actor::Server,
            _model: PhantomData,
        }
    }

    /// Acts on behalf of `actor` (a socket is subscribed by reads and left
    /// out of the messages its changes cause).
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// Records matching `criteria`. Attributes a `select` or `omit` leaves
    /// out take their base value in the structs.
    pub async fn find(&self, criteria: &Criteria) -> Result<Vec<M>> {
        self.engine
            .find(M::def(), criteria, &self.actor)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    /// The record with primary key `id`, if it exists (fully populated).
    pub async fn find_one(&self, id: impl Into<Pk>) -> Result<Option<M>> {
        match self
            .engine
            .find_one(M::def(), &id.into(), &Criteria::new(), &self.actor)
            .await
        {
            Ok(r) => decode(r).map(Some),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How many records match `criteria`'s `where`.
    pub async fn count(&self, criteria: &Criteria) -> Result<u64> {
        self.engine.count(M::def(), criteria, &self.actor).await
    }

    /// Creates a record from `values`: a JSON object as a client would send
    /// it, or any `Serialize` value that serializes to one (a struct of the
    /// attributes to set, say), validated as a client's would be.
    ///
    /// ```
    /// # use topsail::{Model, Topsail};
    /// #[derive(Model)]
    /// struct Pet {
    ///     id: i64,
    ///     #[model(required)]
    ///     name: String,
    /// }
    ///
    /// #[derive(serde::Serialize)]
    /// struct NewPet<'a> {
    ///     name: &'a str,
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> topsail::Result<()> {
    /// # let app = Topsail::builder().model::<Pet>().database_url("sqlite::memory:").create_schema().build().await.unwrap();
    /// let rex = app.model::<Pet>().create(NewPet { name: "Rex" }).await?;
    /// let max = app.model::<Pet>().create(serde_json::json!({"name": "Max"})).await?;
    /// assert_eq!((rex.name.as_str(), max.id), ("Rex", 2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create(&self, values: impl Serialize) -> Result<M> {
        let values = to_values(values, UsageCode::InvalidNewRecord)?;
        self.write(move |engine: Engine, actor: Actor| async move {
            engine
                .create(M::def(), &values, &Populate::All, &actor)
                .await
        })
        .await
    }

    /// Sets `values` (a JSON object, or any `Serialize` value that
    /// serializes to one) on record `id`; `Error::NotFound` if it does not
    /// exist.
    pub async fn update(&self, id: impl Into<Pk>, values: impl Serialize) -> Result<M> {
        let values = to_values(values, UsageCode::InvalidValuesToSet)?;
        let id = id.into();
        self.write(move |engine: Engine, actor: Actor| async move {
            engine.update(M::def(), &id, &values, &actor).await
        })
        .await
    }

    /// Destroys record `id`, returning it as it was.
    pub async fn destroy(&self, id: impl Into<Pk>) -> Result<M> {
        let id = id.into();
        self.write(move |engine: Engine, actor: Actor| async move {
            engine.destroy(M::def(), &id, &actor).await
        })
        .await
    }

    /// Adds `child` to collection `alias` of record `id`.
    pub async fn add(&self, id: impl Into<Pk>, alias: &str, child: impl Into<Pk>) -> Result<M> {
        let (id, alias, child) = (id.into(), alias.to_owned(), child.into());
        self.write(move |engine: Engine, actor: Actor| async move {
            engine.add(M::def(), &id, &alias, &child, &actor).await
        })
        .await
    }

    /// Removes `child` from collection `alias` of record `id`.
    pub async fn remove(&self, id: impl Into<Pk>, alias: &str, child: impl Into<Pk>) -> Result<M> {
        let (id, alias, child) = (id.into(), alias.to_owned(), child.into());
        self.write(move |engine: Engine, actor: Actor| async move {
            engine.remove(M::def(), &id, &alias, &child, &actor).await
        })
        .await
    }

    /// Makes `children` the whole of collection `alias` of record `id`.
    pub async fn replace<I, K>(&self, id: impl Into<Pk>, alias: &str, children: I) -> Result<M>
    where
        I: IntoIterator<Item = K>,
        K: Into<Pk>,
    {
        let ids = Value::Array(children.into_iter().map(|k| k.into().to_json()).collect());
        let (id, alias) = (id.into(), alias.to_owned());
        self.write(move |engine: Engine, actor: Actor| async move {
            engine.replace(M::def(), &id, &alias, &ids, &actor).await
        })
        .await
    }

    /// Runs a write on a task of its own ([`Engine::detached_write`]): when
    /// the caller is dropped (an app handler whose client went away), a
    /// write that commits still publishes its messages, and a graceful
    /// shutdown waits for it.
    async fn write<F, Fut>(&self, write: F) -> Result<M>
    where
        F: FnOnce(Engine, Actor) -> Fut,
        Fut: std::future::Future<Output = Result<topsail_core::Record>> + Send + 'static,
    {
        let (engine, actor) = (self.engine.clone(), self.actor.clone());
        decode(self.engine.detached_write(write(engine, actor)).await?)
    }

    /// The room of record `id`: `sails_model_<identity>_<id>:<identity>`.
    pub fn room_name(&self, id: impl Into<Pk>) -> String {
        record_room(M::def(), &id.into())
    }

    async fn rooms(&self, socket: &str, rooms: Vec<String>, join: bool) {
        let socket = socket.into();
        let effect = if join {
            Effect::Join {
                socket,
                rooms,
                read_at: None,
            }
        } else {
            Effect::Leave { socket, rooms }
        };
        self.engine.publisher().publish(vec![effect]).await;
    }

    fn record_rooms<I: IntoIterator<Item = K>, K: Into<Pk>>(ids: I) -> Vec<String> {
        ids.into_iter()
            .map(|k| record_room(M::def(), &k.into()))
            .collect()
    }

    /// Subscribes `socket` to records `ids` (Sails' `Model.subscribe`).
    pub async fn subscribe<I: IntoIterator<Item = K>, K: Into<Pk>>(&self, socket: &str, ids: I) {
        self.rooms(socket, Self::record_rooms(ids), true).await;
    }

    /// Unsubscribes `socket` from records `ids`.
    pub async fn unsubscribe<I: IntoIterator<Item = K>, K: Into<Pk>>(&self, socket: &str, ids: I) {
        self.rooms(socket, Self::record_rooms(ids), false).await;
    }

    /// `socket` watches this model: it hears of new records (Sails'
    /// private `_watch`).
    pub async fn watch(&self, socket: &str) {
        self.rooms(socket, vec![class_room(M::def())], true).await;
    }

    /// `socket` stops watching this model (Sails has no `unwatch`).
    pub async fn unwatch(&self, socket: &str) {
        self.rooms(socket, vec![class_room(M::def())], false).await;
    }

    /// Sends `data`, as it is, to the subscribers of records `ids`, as an
    /// event named after the model, leaving out `omit` (Sails'
    /// `Model.publish`).
    pub async fn publish<I: IntoIterator<Item = K>, K: Into<Pk>>(
        &self,
        ids: I,
        data: Value,
        omit: Option<&str>,
    ) {
        let effects = ids
            .into_iter()
            .map(|k| Effect::Broadcast {
                room: record_room(M::def(), &k.into()),
                event: M::def().event(),
                payload: data.clone(),
                omit: omit.map(Into::into),
                // The app's own data, to the record's subscribers (who
                // could read it when they subscribed).
                guard: None,
            })
            .collect();
        self.engine.publisher().publish(effects).await;
    }
}
