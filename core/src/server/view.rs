//! Flexible-sync views: which objects each client file holds, which objects it should hold, and
//! the messages that move the one towards the other.
//!
//! # The model
//! For every client file the server keeps the set of objects the file *holds* ([`FileView`]):
//! objects whose every change since the file got them reached it as ordinary downloaded
//! instructions. A DOWNLOAD carries only instructions on held objects (plus schema changes).
//!
//! The objects a file *should* hold are those of its subscription set ([`Matcher`]): top-level,
//! not asymmetric, and matched by one of the set's queries on that collection (a file that never
//! subscribed, set version 0, should hold everything).
//!
//! The two converge through three things:
//! - **Resets.** The server replaces the client's copy of an object, outside transformation:
//!   with its whole current state (the object entered the view) or with nothing (the client
//!   released it, or wrote to an object it does not hold). The client drops every pending local
//!   write to that object when it applies the reset, and the server refuses every write of that
//!   client to the object whose base version is older than the reset (the view keeps the
//!   version of each object's last reset), so both sides agree on exactly which writes survive.
//!   Resets go out only in a DOWNLOAD that brings the client to the latest server version, and
//!   instructions on an object with a pending reset are not sent meanwhile, so a reset is always
//!   positioned after everything it contains.
//! - **Leaving hints.** An object that no longer matches is not removed by the server: it tells
//!   the client, which releases the object (RELEASE) once none of its pending changesets touches
//!   it. Until the server processes the RELEASE the object stays held and its changes keep
//!   flowing, so unacknowledged writes are never lost to an eviction; the reset that follows
//!   the RELEASE removes the object.
//! - **Write acceptance.** A write of the client to object `X` in an upload based on server
//!   version `b` is integrated only if no reset of `X` was sent after `b`, no reset is pending,
//!   and either the client holds `X`, or `X` does not exist and nothing touched it after `b` (a
//!   fresh create, which makes the client hold it). Anything else is refused and answered with
//!   a reset, because the client's transformation could not have seen the history the server
//!   would transform it against.
//!
//! # Forgetting
//! An erased object stays held, so that the client's concurrent writes to it are still merged
//! with the erase, and every reset's version is kept, so that older writes are refused. Both
//! matter only for writes based before them. A client file *confirms* a server version when it
//! identifies with that download cursor or uploads changesets based on it: the client rebases
//! its pending changesets on every DOWNLOAD it integrates, so all its later writes are based at
//! or after that version. Past a confirmed version the view forgets erased objects (nothing
//! touched them since) and older resets ([`FileView::confirm`]), so a view does not grow with
//! every object ever erased or reset. A file that comes back with a cursor older than what its
//! view forgot (restored from a copy, or storage that lost commits) can no longer be served
//! exactly and must reset ([`FileView::forgotten_at`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::changeset::{decode_changeset, encode_changeset, DecodeLimits, Instruction, Path};
use crate::protocol::SubscriptionSet;
use crate::query::{self, DocumentFilter, ObjectSource, Query, UserContext};
use crate::schema::{CollectionKind, ScalarType, Schema, PRIMARY_KEY};
use crate::store::Store;
use crate::value::{Document, ObjectId, PrimaryKey, Uuid, Value};
use crate::wire::Reader;

/// A top-level object: its collection and primary key.
pub type ObjectKey = (String, PrimaryKey);

impl ObjectSource for Store {
    fn schema(&self) -> &Schema {
        Store::schema(self)
    }

    fn get(&self, collection: &str, key: &PrimaryKey) -> Option<&Document> {
        Store::get(self, collection, key)
    }

    fn objects<'a>(
        &'a self,
        collection: &str,
    ) -> Box<dyn Iterator<Item = (&'a PrimaryKey, &'a Document)> + 'a> {
        Box::new(Store::objects(self, collection))
    }
}

/// Whether a collection can be in a view (top-level and not asymmetric).
pub fn viewable(schema: &Schema, collection: &str) -> bool {
    schema
        .collection(collection)
        .is_some_and(|c| c.kind == CollectionKind::TopLevel)
}

/// The permission rules of one collection: which documents a user may read and write.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionRules {
    /// Documents the user may read; others never reach the user's clients.
    pub read: DocumentFilter,
    /// Documents the user may write: the document before the write (if it existed) and after
    /// it (unless erased) must both pass.
    pub write: DocumentFilter,
}

/// Role-based permissions: rules per collection. A collection without rules may be read and
/// written by every user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Roles {
    /// The rules, by collection name.
    pub collections: BTreeMap<String, CollectionRules>,
}

impl Roles {
    /// Whether `user` may read every document of every collection.
    pub fn reads_everything(&self) -> bool {
        self.collections.values().all(|r| r.read.is_true())
    }

    /// Whether `user` may read the document.
    pub fn may_read(&self, collection: &str, doc: &Document, user: &UserContext) -> bool {
        self.collections
            .get(collection)
            .is_none_or(|r| r.read.matches(doc, user))
    }

    /// Whether `user` may apply `instructions` (all on one object) to the object as it is in
    /// `store`: the document before must pass the write filter, and so must the document after,
    /// unless the instructions erase it.
    pub fn may_write(
        &self,
        store: &Store,
        user: &UserContext,
        (collection, key): (&str, &PrimaryKey),
        instructions: &[Instruction],
    ) -> bool {
        let Some(rules) = self.collections.get(collection) else {
            return true;
        };
        if rules.write.is_true() {
            return true;
        }
        if let Some(before) = store.get(collection, key) {
            if !rules.write.matches(before, user) {
                return false;
            }
        }
        let mut scratch = Store::new(store.schema().clone());
        let mut changes = crate::store::Changes::default();
        let rebuilt = reset_instructions(store, collection, key, true);
        if scratch.apply(&rebuilt, &mut changes).is_err()
            || scratch.apply(instructions, &mut changes).is_err()
        {
            // Writes that do not apply are refused by the integration itself.
            return true;
        }
        scratch
            .get(collection, key)
            .is_none_or(|after| rules.write.matches(after, user))
    }
}

/// The permission context of a user (only `%%user.id` is known to the sync engine).
pub fn user_context(id: &str) -> UserContext {
    UserContext {
        id: id.to_owned(),
        ..UserContext::default()
    }
}

/// Decides which objects belong in a session's view: those its subscription set selects that
/// its user may read.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// `None`: the set has version 0 and selects every object.
    queries: Option<Vec<(String, Query)>>,
    /// The read rules and the user they are checked for (`None`: everything is readable).
    reads: Option<(Roles, UserContext)>,
    /// The collections a `TRUEPREDICATE` subscription selects whole (`None` with `queries`).
    everything_in: Option<BTreeSet<String>>,
}

impl Matcher {
    /// The matcher of a subscription set; queries that do not parse select nothing (the engine
    /// refuses such sets before they take effect).
    pub fn new(set: &SubscriptionSet) -> Self {
        if set.version == 0 {
            return Matcher::default();
        }
        let queries: Vec<(String, Query)> = set
            .subscriptions
            .iter()
            .filter_map(|s| Some((s.collection.clone(), query::parse(&s.query).ok()?)))
            .collect();
        let everything = query::parse("TRUEPREDICATE").ok();
        let everything_in = queries
            .iter()
            .filter(|(_, q)| Some(q) == everything.as_ref())
            .map(|(c, _)| c.clone())
            .collect();
        Matcher {
            queries: Some(queries),
            reads: None,
            everything_in: Some(everything_in),
        }
    }

    /// Restricts the matcher to what `user` may read under `roles`.
    pub fn with_reads(mut self, roles: &Roles, user: &str) -> Self {
        if !roles.reads_everything() {
            self.reads = Some((roles.clone(), user_context(user)));
        }
        self
    }

    /// Whether every object of `schema` is selected: no read rules restrict the user, and the
    /// set has version 0 or a `TRUEPREDICATE` subscription on every top-level collection.
    pub fn selects_everything(&self, schema: &Schema) -> bool {
        if self.reads.is_some() {
            return false;
        }
        match &self.everything_in {
            None => true,
            Some(collections) => schema
                .collections
                .keys()
                .filter(|c| viewable(schema, c))
                .all(|c| collections.contains(c)),
        }
    }

    /// The collections whose subscriptions read other collections through links, with the
    /// collections they read: `(source, targets)`. A change to an object of a target can bring
    /// objects of the source into the view, or take them out, without touching them.
    pub fn link_dependencies(&self, schema: &Schema) -> Vec<(String, Vec<String>)> {
        let Some(queries) = &self.queries else {
            return Vec::new();
        };
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (collection, query) in queries {
            let targets = query.linked_collections(schema, collection);
            if targets.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(c, _)| c == collection) {
                Some((_, known)) => {
                    known.extend(targets);
                    known.sort();
                    known.dedup();
                }
                None => out.push((collection.clone(), targets)),
            }
        }
        out
    }

    /// Whether the object exists in `store` and belongs in the view.
    pub fn selects(&self, store: &Store, collection: &str, key: &PrimaryKey) -> bool {
        if !viewable(store.schema(), collection) {
            return false;
        }
        let Some(doc) = store.get(collection, key) else {
            return false;
        };
        if let Some((roles, user)) = &self.reads {
            if !roles.may_read(collection, doc, user) {
                return false;
            }
        }
        match &self.queries {
            None => true,
            Some(queries) => queries
                .iter()
                .filter(|(c, _)| c == collection)
                .any(|(_, q)| q.matches(doc, store, &[]).unwrap_or(false)),
        }
    }
}

/// The objects a client file holds, and the resets owed to it.
///
/// Every change is also noted in a change log, so that storing a view writes what changed
/// ([`FileView::delta`]) rather than the whole view: a view holds as many objects as the file's
/// subscriptions match, and each object entering it would otherwise rewrite all of them.
#[derive(Clone, Debug, Default)]
pub struct FileView {
    /// The objects held; `None` when the file holds every object (a file that never narrowed
    /// its view, or one opened from a full STATE snapshot).
    held: Option<BTreeSet<ObjectKey>>,
    /// For each object, the server version of the last reset sent for it.
    last_reset: BTreeMap<ObjectKey, u64>,
    /// Objects owed a reset in the next DOWNLOAD that reaches the latest version.
    pending_resets: BTreeSet<ObjectKey>,
    /// The server version at which a file that held everything narrowed to the objects that
    /// existed then (0 if it never did).
    narrowed_at: u64,
    /// The confirmed version at which the view last forgot something: a file whose download
    /// cursor is older must reset (0 if it never forgot anything).
    forgotten_at: u64,
    /// The highest server version the file confirmed since the view was loaded.
    confirmed: u64,
    /// Held objects seen erased, by the version of their erase: forgotten once that version is
    /// confirmed, unless something touched them since.
    erased: BTreeSet<(u64, ObjectKey)>,
    /// `last_reset` ordered by version, to forget the old entries without a scan.
    resets_by_version: BTreeSet<(u64, ObjectKey)>,
    /// What changed since the view was last stored.
    unsaved: Unsaved,
}

/// A view's changes not yet stored.
#[derive(Clone, Debug, Default)]
struct Unsaved {
    /// The stored view must be replaced whole (a new view, a narrowing, a failed store).
    whole: bool,
    /// The header (held-everything flag, `narrowed_at`, `forgotten_at`) changed.
    header: bool,
    /// Objects whose held flag, pending reset or last reset changed.
    objects: BTreeSet<ObjectKey>,
}

/// What a view records about one object, as stored (one row per object with any of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectState {
    /// The file holds the object (only in a narrowed view).
    pub held: bool,
    /// A reset of the object is owed.
    pub pending: bool,
    /// The server version of the last reset sent for it.
    pub last_reset: Option<u64>,
}

impl ObjectState {
    /// Whether the view records nothing about the object (its row is deleted).
    pub fn is_empty(&self) -> bool {
        *self == ObjectState::default()
    }
}

/// A view as storage holds it: its header ([`FileView::header`]) and one row per object,
/// keyed by [`encode_object`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredView {
    /// The encoded header.
    pub header: Vec<u8>,
    /// The object rows.
    pub objects: BTreeMap<Vec<u8>, ObjectState>,
}

/// The changes to store for one view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewDelta {
    /// The new header, when it changed (always with `whole`).
    pub header: Option<Vec<u8>>,
    /// Every stored object row is dropped before `objects` are written.
    pub whole: bool,
    /// Rows to write, keyed by [`encode_object`]; `None` deletes the row.
    pub objects: Vec<(Vec<u8>, Option<ObjectState>)>,
}

impl StoredView {
    /// Applies a delta, as storage does.
    pub fn apply(&mut self, delta: &ViewDelta) {
        if let Some(header) = &delta.header {
            self.header.clone_from(header);
        }
        if delta.whole {
            self.objects.clear();
        }
        for (object, state) in &delta.objects {
            match state {
                Some(state) => self.objects.insert(object.clone(), *state),
                None => self.objects.remove(object),
            };
        }
    }
}

impl PartialEq for FileView {
    /// Views are equal when they record the same objects and versions; what is derived from them
    /// or kept only in memory (the change log, the notes of what to forget) is not compared.
    fn eq(&self, other: &Self) -> bool {
        self.held == other.held
            && self.last_reset == other.last_reset
            && self.pending_resets == other.pending_resets
            && self.narrowed_at == other.narrowed_at
            && self.forgotten_at == other.forgotten_at
    }
}

impl Eq for FileView {}

impl FileView {
    /// A new view holding nothing.
    pub fn empty() -> Self {
        FileView {
            held: Some(BTreeSet::new()),
            ..FileView::everything()
        }
    }

    /// A new view holding every object.
    pub fn everything() -> Self {
        FileView {
            unsaved: Unsaved {
                whole: true,
                ..Unsaved::default()
            },
            ..FileView::default()
        }
    }

    /// Whether the file holds every object (it never narrowed its view).
    pub fn holds_everything(&self) -> bool {
        self.held.is_none()
    }

    /// The objects held, when the view is narrowed.
    pub fn held(&self) -> Option<&BTreeSet<ObjectKey>> {
        self.held.as_ref()
    }

    /// Whether the file holds the object.
    pub fn holds(&self, collection: &str, key: &PrimaryKey) -> bool {
        match &self.held {
            None => true,
            Some(held) => held.contains(&(collection.to_owned(), key.clone())),
        }
    }

    /// Whether the view records nothing beyond holding everything.
    pub fn is_unnarrowed(&self) -> bool {
        self.held.is_none() && self.pending_resets.is_empty() && self.last_reset.is_empty()
    }

    /// Whether any reset is owed.
    pub fn owes_resets(&self) -> bool {
        !self.pending_resets.is_empty()
    }

    /// The server version at which the view narrowed (0 if it never did).
    pub fn narrowed_at(&self) -> u64 {
        self.narrowed_at
    }

    /// The confirmed version at which the view last forgot erased objects or resets (0 if it
    /// never did): a file whose download cursor is older must reset.
    pub fn forgotten_at(&self) -> u64 {
        self.forgotten_at
    }

    /// Notes that the held `object` was erased at `version` (its last touch), to be forgotten
    /// once the file confirms that version.
    pub fn note_erased(&mut self, object: ObjectKey, version: u64) {
        if self.held.as_ref().is_some_and(|h| h.contains(&object)) {
            self.erased.insert((version, object));
        }
    }

    /// Notes every held object that `store` no longer has (after loading a stored view, whose
    /// notes are not stored).
    pub fn note_all_erased(&mut self, store: &Store, touches: &Touches) {
        let Some(held) = &self.held else {
            return;
        };
        self.erased.extend(
            held.iter()
                .filter(|(c, k)| store.get(c, k).is_none())
                .map(|object| (touches.last(object), object.clone())),
        );
    }

    /// The file confirms that it integrated every change up to server `version` and that all
    /// its later writes are based at or after it (see the module documentation): the view
    /// forgets the erased objects nothing touched since and the resets before it. Returns
    /// whether the view changed.
    pub fn confirm(&mut self, version: u64, store: &Store, touches: &Touches) -> bool {
        if version <= self.confirmed {
            return false;
        }
        self.confirmed = version;
        let mut forgot = false;
        while let Some((erased_at, object)) = self.erased.first().cloned() {
            if erased_at > version {
                break;
            }
            self.erased.pop_first();
            let (collection, key) = (&object.0, &object.1);
            if store.get(collection, key).is_some()
                || touches.last(&object) > version
                || self.pending_resets.contains(&object)
            {
                continue;
            }
            if let Some(held) = self.held.as_mut() {
                if held.remove(&object) {
                    self.unsaved.objects.insert(object);
                    forgot = true;
                }
            }
        }
        while let Some((reset_at, object)) = self.resets_by_version.first().cloned() {
            // A reset at the confirmed version itself may be in a DOWNLOAD the client lost (it
            // does not move the cursor), so it is kept (see `reset_since`).
            if reset_at >= version {
                break;
            }
            self.resets_by_version.pop_first();
            self.last_reset.remove(&object);
            self.unsaved.objects.insert(object);
            forgot = true;
        }
        if forgot {
            self.forgotten_at = version;
            self.unsaved.header = true;
        }
        forgot
    }

    /// The objects whose last reset went out at or after `version`.
    pub fn reset_since(&self, version: u64) -> Vec<ObjectKey> {
        self.last_reset
            .iter()
            .filter(|(_, v)| **v >= version)
            .map(|(object, _)| object.clone())
            .collect()
    }

    /// A file that held everything narrows to `objects` (those that exist now) at `version`.
    pub fn narrow(&mut self, objects: BTreeSet<ObjectKey>, version: u64) {
        self.held = Some(objects);
        self.narrowed_at = version;
        self.unsaved.whole = true;
    }

    /// Moves the narrowing point back to `version`.
    pub fn set_narrowed_at(&mut self, version: u64) {
        self.narrowed_at = version;
        self.unsaved.header = true;
    }

    /// Owes the file a reset of `object`; false if one was owed already.
    pub fn owe_reset(&mut self, object: ObjectKey) -> bool {
        if !self.pending_resets.insert(object.clone()) {
            return false;
        }
        self.unsaved.objects.insert(object);
        true
    }

    /// Takes the first owed reset.
    pub fn take_reset(&mut self) -> Option<ObjectKey> {
        let object = self.pending_resets.pop_first()?;
        self.unsaved.objects.insert(object.clone());
        Some(object)
    }

    /// Records that a reset of `object` went out at `version`, leaving the file holding the
    /// object or not (`present`; a view holding everything keeps doing so).
    pub fn record_reset(&mut self, object: ObjectKey, version: u64, present: bool) {
        if let Some(held) = self.held.as_mut() {
            if present {
                held.insert(object.clone());
            } else {
                held.remove(&object);
            }
        }
        if let Some(previous) = self.last_reset.insert(object.clone(), version) {
            self.resets_by_version.remove(&(previous, object.clone()));
        }
        self.resets_by_version.insert((version, object.clone()));
        self.unsaved.objects.insert(object);
    }

    /// Adds objects to a narrowed view; returns whether it changed.
    pub fn hold(&mut self, objects: impl IntoIterator<Item = ObjectKey>) -> bool {
        let Some(held) = self.held.as_mut() else {
            return false;
        };
        let mut changed = false;
        for object in objects {
            if held.insert(object.clone()) {
                self.unsaved.objects.insert(object);
                changed = true;
            }
        }
        changed
    }

    /// RELEASE of `object`: a held object stops being held and is owed a reset.
    pub fn release(&mut self, object: ObjectKey) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if held.remove(&object) {
            self.pending_resets.insert(object.clone());
            self.unsaved.objects.insert(object);
        }
    }

    /// Whether an instruction reaches this file in a DOWNLOAD.
    pub fn sends(&self, schema: &Schema, instruction: &Instruction) -> bool {
        match instruction.object() {
            None => true,
            Some((collection, key)) => {
                viewable(schema, collection)
                    && self.holds(collection, key)
                    && (self.pending_resets.is_empty()
                        || !self
                            .pending_resets
                            .contains(&(collection.to_owned(), key.clone())))
            }
        }
    }

    /// Whether the file's write to an object, in an upload based on server version `base`, can
    /// be integrated (see the module documentation).
    pub fn accepts(
        &self,
        store: &Store,
        touches: &Touches,
        base: u64,
        collection: &str,
        key: &PrimaryKey,
    ) -> bool {
        let object = (collection.to_owned(), key.clone());
        if self.last_reset.get(&object).is_some_and(|v| *v > base)
            || self.pending_resets.contains(&object)
        {
            return false;
        }
        self.holds(collection, key)
            || (store.get(collection, key).is_none() && touches.last(&object) <= base)
    }

    /// What the view records about one object.
    fn state(&self, object: &ObjectKey) -> ObjectState {
        ObjectState {
            held: self.held.as_ref().is_some_and(|h| h.contains(object)),
            pending: self.pending_resets.contains(object),
            last_reset: self.last_reset.get(object).copied(),
        }
    }

    /// The encoded header: whether the view is narrowed, `narrowed_at` and `forgotten_at`.
    pub fn header(&self) -> Vec<u8> {
        let mut out = vec![HEADER_FORMAT, u8::from(self.held.is_some())];
        crate::wire::write_u64(&mut out, self.narrowed_at);
        crate::wire::write_u64(&mut out, self.forgotten_at);
        out
    }

    /// The changes to store since the last [`FileView::saved`], if any.
    pub fn delta(&self) -> Option<ViewDelta> {
        let unsaved = &self.unsaved;
        if !unsaved.whole && !unsaved.header && unsaved.objects.is_empty() {
            return None;
        }
        let row = |object: &ObjectKey| {
            let state = self.state(object);
            (encode_object(object), (!state.is_empty()).then_some(state))
        };
        let objects = if unsaved.whole {
            let mut all: BTreeSet<&ObjectKey> = self.held.iter().flatten().collect();
            all.extend(self.pending_resets.iter());
            all.extend(self.last_reset.keys());
            all.into_iter().map(row).collect()
        } else {
            unsaved.objects.iter().map(row).collect()
        };
        Some(ViewDelta {
            header: (unsaved.whole || unsaved.header).then(|| self.header()),
            whole: unsaved.whole,
            objects,
        })
    }

    /// The last [`FileView::delta`] is stored.
    pub fn saved(&mut self) {
        self.unsaved = Unsaved::default();
    }

    /// Storing the last delta failed: the next one replaces the stored view whole.
    pub fn store_failed(&mut self) {
        self.unsaved.whole = true;
    }

    /// Reads a view as storage holds it. A header in the format of views stored whole (before
    /// views were stored per object) holds the whole view; such a view is stored whole again
    /// with its next change. A header from before views forgot anything has no `forgotten_at`.
    pub fn from_stored(stored: &StoredView) -> Result<Self, String> {
        let mut view = match stored.header.first() {
            Some(&format @ (HEADER_FORMAT_UNFORGETTING | HEADER_FORMAT)) => {
                let mut r = Reader::new(stored.header.get(1..).unwrap_or_default());
                let wire = |e: crate::wire::WireError| format!("stored view: {e}");
                let narrowed = r.u8("held flag").map_err(wire)? != 0;
                let narrowed_at = r.u64("narrowed_at").map_err(wire)?;
                let forgotten_at = if format == HEADER_FORMAT {
                    r.u64("forgotten_at").map_err(wire)?
                } else {
                    0
                };
                FileView {
                    held: narrowed.then(BTreeSet::new),
                    narrowed_at,
                    forgotten_at,
                    confirmed: forgotten_at,
                    ..FileView::default()
                }
            }
            _ => {
                let mut view = FileView::decode_whole(&stored.header)?;
                view.unsaved.whole = true;
                view
            }
        };
        for (bytes, state) in &stored.objects {
            let object = decode_object(bytes)?;
            if state.held {
                if let Some(held) = view.held.as_mut() {
                    held.insert(object.clone());
                }
            }
            if state.pending {
                view.pending_resets.insert(object.clone());
            }
            if let Some(version) = state.last_reset {
                view.last_reset.insert(object, version);
            }
        }
        view.resets_by_version = view
            .last_reset
            .iter()
            .map(|(object, version)| (*version, object.clone()))
            .collect();
        Ok(view)
    }

    /// Reads a view stored whole, in the format views had before they were stored per object
    /// (a held flag, then the held objects, the owed resets and the last resets as changeset
    /// bodies, then `narrowed_at`).
    fn decode_whole(bytes: &[u8]) -> Result<Self, String> {
        let limits = DecodeLimits::default();
        let mut r = Reader::new(bytes);
        let wire = |e: crate::wire::WireError| format!("stored view: {e}");
        let narrowed = r.u8("held flag").map_err(wire)? != 0;
        let body = |r: &mut Reader<'_>| -> Result<Vec<Instruction>, String> {
            let bytes = r.bytes("view part", usize::MAX).map_err(wire)?;
            decode_changeset(bytes, &limits).map_err(|e| format!("stored view: {e}"))
        };
        let held: BTreeSet<ObjectKey> = object_keys(&body(&mut r)?).into_iter().collect();
        let pending_resets = object_keys(&body(&mut r)?).into_iter().collect();
        let last_reset = body(&mut r)?
            .into_iter()
            .filter_map(|i| match i {
                Instruction::Set {
                    path,
                    value: Value::Int(v),
                } => Some(((path.collection, path.key), u64::try_from(v).unwrap_or(0))),
                _ => None,
            })
            .collect();
        let narrowed_at = r.u64("narrowed_at").map_err(wire)?;
        Ok(FileView {
            held: narrowed.then_some(held),
            last_reset,
            pending_resets,
            narrowed_at,
            ..FileView::default()
        })
    }
}

/// The first byte of a view header stored per object, with `forgotten_at`. Views stored whole
/// began with their held flag, 0 or 1.
const HEADER_FORMAT: u8 = 3;

/// The first byte of a view header stored per object before views forgot anything (no
/// `forgotten_at`).
const HEADER_FORMAT_UNFORGETTING: u8 = 2;

/// An object's key in a stored view: its collection, then its primary key's type and value.
pub fn encode_object(object: &ObjectKey) -> Vec<u8> {
    let (collection, key) = object;
    let mut out = Vec::with_capacity(collection.len() + 18);
    crate::wire::write_str(&mut out, collection);
    match key {
        PrimaryKey::Int(i) => {
            out.push(0);
            crate::wire::write_i64(&mut out, *i);
        }
        PrimaryKey::String(s) => {
            out.push(1);
            crate::wire::write_str(&mut out, s);
        }
        PrimaryKey::ObjectId(o) => {
            out.push(2);
            out.extend_from_slice(&o.0);
        }
        PrimaryKey::Uuid(u) => {
            out.push(3);
            out.extend_from_slice(&u.0);
        }
    }
    out
}

/// Reads `N` bytes of a stored view object.
fn fixed<const N: usize>(r: &mut Reader<'_>, what: &'static str) -> Result<[u8; N], String> {
    r.take(N, what)
        .map_err(|e| format!("stored view object: {e}"))?
        .try_into()
        .map_err(|_| format!("stored view object: short {what}"))
}

/// Reads an object key written by [`encode_object`].
pub fn decode_object(bytes: &[u8]) -> Result<ObjectKey, String> {
    let mut r = Reader::new(bytes);
    let wire = |e: crate::wire::WireError| format!("stored view object: {e}");
    let collection = r.str("collection", usize::MAX).map_err(wire)?.to_owned();
    let key = match r.u8("key type").map_err(wire)? {
        0 => PrimaryKey::Int(r.i64("key").map_err(wire)?),
        1 => PrimaryKey::String(r.str("key", usize::MAX).map_err(wire)?.to_owned()),
        2 => PrimaryKey::ObjectId(ObjectId(fixed(&mut r, "object id")?)),
        3 => PrimaryKey::Uuid(Uuid(fixed(&mut r, "uuid")?)),
        other => return Err(format!("stored view object: unknown key type {other}")),
    };
    if !r.is_empty() {
        return Err("stored view object: bytes after the key".into());
    }
    Ok((collection, key))
}

/// The objects named by `EraseObject` instructions, in order (the form of RELEASE, of the
/// `leaving` list of a DOWNLOAD and of the first instruction of each reset).
pub fn object_keys(instructions: &[Instruction]) -> Vec<ObjectKey> {
    instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::EraseObject { collection, key } => Some((collection.clone(), key.clone())),
            _ => None,
        })
        .collect()
}

/// Encodes a list of objects as a changeset body of `EraseObject` instructions (empty for none).
pub fn encode_object_keys(keys: &[ObjectKey]) -> Vec<u8> {
    if keys.is_empty() {
        return Vec::new();
    }
    let instructions: Vec<Instruction> = keys
        .iter()
        .map(|(collection, key)| Instruction::EraseObject {
            collection: collection.clone(),
            key: key.clone(),
        })
        .collect();
    encode_changeset(&instructions)
}

/// The instructions of one reset: drop the local copy, then rebuild it when it exists in
/// `store` and belongs in the view.
pub fn reset_instructions(
    store: &Store,
    collection: &str,
    key: &PrimaryKey,
    present: bool,
) -> Vec<Instruction> {
    let mut out = vec![Instruction::EraseObject {
        collection: collection.to_owned(),
        key: key.clone(),
    }];
    if let Some(doc) = store.get(collection, key).filter(|_| present) {
        out.push(Instruction::CreateObject {
            collection: collection.to_owned(),
            key: key.clone(),
        });
        for (field, value) in doc.iter().filter(|(f, _)| f.as_str() != PRIMARY_KEY) {
            out.push(Instruction::Set {
                path: Path::field(collection.to_owned(), key.clone(), field.clone()),
                value: value.clone(),
            });
        }
    }
    out
}

/// The last server version that touched each object (what write acceptance needs to know
/// whether anything happened to an object after an upload's base).
#[derive(Clone, Debug, Default)]
pub struct Touches {
    last: HashMap<ObjectKey, u64>,
}

impl Touches {
    /// Records the objects `instructions` (integrated at `version`) touch.
    pub fn record(&mut self, instructions: &[Instruction], version: u64) {
        for (collection, key) in instructions.iter().filter_map(Instruction::object) {
            match self.last.get_mut(&(collection.to_owned(), key.clone())) {
                Some(v) => *v = version,
                None => {
                    self.last
                        .insert((collection.to_owned(), key.clone()), version);
                }
            }
        }
    }

    /// The last version that touched the object (0 if none).
    pub fn last(&self, object: &ObjectKey) -> u64 {
        self.last.get(object).copied().unwrap_or(0)
    }
}

/// Which objects link to each object: the reverse of every link the store's objects hold
/// (in fields, collections and embedded objects), so that a change to an object rechecks only
/// the objects whose subscriptions can reach it through links.
#[derive(Clone, Debug, Default)]
pub struct Backlinks {
    /// Each object's link targets, sorted (objects without links have no entry).
    outgoing: HashMap<ObjectKey, Vec<ObjectKey>>,
    /// Each link target's sources.
    incoming: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
}

impl Backlinks {
    /// Records the links of the objects `instructions` touched, as `store` holds them now
    /// (objects of collections without link properties have none to record).
    pub fn record(&mut self, store: &Store, instructions: &[Instruction]) {
        let schema = store.schema();
        let mut done: BTreeSet<(&str, &PrimaryKey)> = BTreeSet::new();
        for (collection, key) in instructions.iter().filter_map(Instruction::object) {
            if !done.insert((collection, key)) || !may_link(schema, collection, 0) {
                continue;
            }
            let mut targets = Vec::new();
            if let Some(doc) = store.get(collection, key) {
                doc.values().for_each(|v| collect_links(v, &mut targets));
            }
            targets.sort();
            targets.dedup();
            let source = (collection.to_owned(), key.clone());
            let old = self.outgoing.remove(&source).unwrap_or_default();
            for gone in old.iter().filter(|t| targets.binary_search(t).is_err()) {
                if let Some(sources) = self.incoming.get_mut(gone) {
                    sources.remove(&source);
                    if sources.is_empty() {
                        self.incoming.remove(gone);
                    }
                }
            }
            for new in targets.iter().filter(|t| old.binary_search(t).is_err()) {
                self.incoming
                    .entry(new.clone())
                    .or_default()
                    .insert(source.clone());
            }
            if !targets.is_empty() {
                self.outgoing.insert(source, targets);
            }
        }
    }

    /// The objects that link to `target`.
    pub fn linking(&self, target: &ObjectKey) -> impl Iterator<Item = &ObjectKey> {
        self.incoming.get(target).into_iter().flatten()
    }
}

/// Whether objects of `collection` can hold links (a link property, or one in an embedded
/// object; `depth` bounds embedded objects that contain themselves).
fn may_link(schema: &Schema, collection: &str, depth: usize) -> bool {
    depth < 8
        && schema.collection(collection).is_some_and(|c| {
            c.properties.values().any(|p| match &p.ty {
                ScalarType::Link(_) => true,
                ScalarType::Embedded(target) => may_link(schema, target, depth + 1),
                _ => false,
            })
        })
}

/// Adds every link target in `value` to `out`.
fn collect_links(value: &Value, out: &mut Vec<ObjectKey>) {
    match value {
        Value::Link(link) => out.push((link.collection.clone(), link.key.clone())),
        Value::List(elements) | Value::Set(elements) => {
            elements.iter().for_each(|v| collect_links(v, out));
        }
        Value::Dict(entries) => entries.values().for_each(|v| collect_links(v, out)),
        Value::Object(doc) => doc.values().for_each(|v| collect_links(v, out)),
        _ => {}
    }
}

/// What one session of a file knows about its view beyond the file's [`FileView`].
#[derive(Clone, Debug, Default)]
pub struct SessionView {
    /// The subscription set's matcher.
    pub matcher: Matcher,
    /// Every object must be checked against the matcher at the next DOWNLOAD that reaches the
    /// latest version (after IDENT and QUERY).
    pub recheck_all: bool,
    /// Where a catch-up split over several DOWNLOADs began: the DOWNLOAD that reaches the latest
    /// version checks every object touched since then, not only since its own cursor.
    pub recheck_from: Option<u64>,
    /// Objects this session was told are leaving (sent once per session).
    pub hinted: BTreeSet<ObjectKey>,
    /// The subscription set version whose view has been fully sent.
    pub complete_version: u64,
    /// Objects whose writes were refused, and why, for the next compensating-write error.
    pub refused: Vec<(ObjectKey, String)>,
    /// A bootstrap of resets is being sent in several DOWNLOADs.
    pub in_batch: bool,
}

/// Objects touched by `instructions` that can be in a view.
pub fn touched(schema: &Schema, instructions: &[Instruction]) -> BTreeSet<ObjectKey> {
    instructions
        .iter()
        .filter_map(Instruction::object)
        .filter(|(c, _)| viewable(schema, c))
        .map(|(c, k)| (c.to_owned(), k.clone()))
        .collect()
}

/// Adds to `candidates` every object that reaches one of them through links within the
/// collections of `dependencies` (see [`Matcher::link_dependencies`]): whether such an object
/// matches a query that follows its links may have changed with the candidate.
pub fn add_linking_objects(
    backlinks: &Backlinks,
    dependencies: &[(String, Vec<String>)],
    candidates: &mut BTreeSet<ObjectKey>,
) {
    if dependencies.is_empty() {
        return;
    }
    let on_a_path = |collection: &str| {
        dependencies.iter().any(|(source, targets)| {
            source == collection || targets.iter().any(|t| t == collection)
        })
    };
    let mut frontier: Vec<ObjectKey> = candidates
        .iter()
        .filter(|(c, _)| on_a_path(c))
        .cloned()
        .collect();
    while let Some(target) = frontier.pop() {
        for source in backlinks.linking(&target) {
            if on_a_path(&source.0) && candidates.insert(source.clone()) {
                frontier.push(source.clone());
            }
        }
    }
}

/// Every object of every viewable collection of `store`.
pub fn all_objects(store: &Store) -> BTreeSet<ObjectKey> {
    let schema = store.schema();
    schema
        .collections
        .keys()
        .filter(|c| viewable(schema, c))
        .flat_map(|c| store.objects(c).map(move |(k, _)| (c.clone(), k.clone())))
        .collect()
}

/// Objects touched by a downloaded `instructions` list that the client should skip, and the
/// instructions it keeps.
pub fn filter_instructions(
    view: &FileView,
    schema: &Schema,
    instructions: &[Instruction],
) -> Option<Vec<Instruction>> {
    let asymmetric = || {
        schema
            .collections
            .values()
            .any(|c| c.kind == CollectionKind::Asymmetric)
    };
    if view.held.is_none() && view.pending_resets.is_empty() && !asymmetric() {
        // Holds everything: only instructions on unknown collections would be left out, and
        // the history has none.
        return None;
    }
    if instructions.iter().all(|i| view.sends(schema, i)) {
        return None;
    }
    Some(
        instructions
            .iter()
            .filter(|i| view.sends(schema, i))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Subscription;
    use crate::sim::sim_schema;

    fn item(n: i64) -> Vec<Instruction> {
        vec![
            Instruction::CreateObject {
                collection: "Item".into(),
                key: PrimaryKey::Int(n),
            },
            Instruction::Set {
                path: Path::field("Item", PrimaryKey::Int(n), "n"),
                value: Value::Int(n),
            },
        ]
    }

    fn store_with(items: &[i64]) -> Store {
        let mut store = Store::new(sim_schema());
        let mut changes = crate::store::Changes::default();
        for n in items {
            store.apply(&item(*n), &mut changes).unwrap();
        }
        store
    }

    fn subscribe(query: &str) -> SubscriptionSet {
        SubscriptionSet {
            version: 1,
            subscriptions: vec![Subscription {
                name: "s".into(),
                collection: "Item".into(),
                query: query.into(),
            }],
        }
    }

    /// Stores `view`'s delta into `stored` and marks it saved.
    fn store(view: &mut FileView, stored: &mut StoredView) {
        if let Some(delta) = view.delta() {
            stored.apply(&delta);
        }
        view.saved();
    }

    #[test]
    fn a_view_survives_storage_change_by_change() {
        let object = |k: i64| ("Item".to_owned(), PrimaryKey::Int(k));
        let mut stored = StoredView::default();
        let mut view = FileView::empty();
        store(&mut view, &mut stored);
        assert!(view.delta().is_none(), "nothing changed since");
        assert!(view.hold([object(1), ("Item".into(), PrimaryKey::String("x".into()))]));
        assert!(view.owe_reset(object(2)));
        assert!(!view.owe_reset(object(2)));
        view.record_reset(object(3), 42, true);
        view.set_narrowed_at(7);
        let delta = view.delta().unwrap();
        assert!(!delta.whole);
        assert_eq!(delta.objects.len(), 4, "only the changed objects");
        store(&mut view, &mut stored);
        assert_eq!(FileView::from_stored(&stored).unwrap(), view);

        view.release(object(1));
        assert_eq!(view.take_reset(), Some(object(1)));
        view.record_reset(object(1), 50, false);
        assert_eq!(view.delta().unwrap().objects.len(), 1);
        assert!(
            view.delta().unwrap().header.is_none(),
            "the header did not change"
        );
        store(&mut view, &mut stored);
        let read = FileView::from_stored(&stored).unwrap();
        assert_eq!(read, view);
        assert!(!read.holds("Item", &PrimaryKey::Int(1)));
        assert_eq!(read.reset_since(43), vec![object(1)]);

        // A failed store leaves the next delta whole, replacing every row.
        stored.objects.insert(
            encode_object(&object(99)),
            ObjectState {
                held: true,
                ..ObjectState::default()
            },
        );
        view.store_failed();
        assert!(view.delta().unwrap().whole);
        store(&mut view, &mut stored);
        assert_eq!(FileView::from_stored(&stored).unwrap(), view);

        let mut everything = FileView::everything();
        let mut stored = StoredView::default();
        store(&mut everything, &mut stored);
        assert!(stored.objects.is_empty());
        assert!(FileView::from_stored(&stored).unwrap().holds_everything());
        everything.narrow(BTreeSet::from([object(5)]), 9);
        assert!(everything.delta().unwrap().whole);
        store(&mut everything, &mut stored);
        assert_eq!(FileView::from_stored(&stored).unwrap(), everything);
    }

    #[test]
    fn a_confirmed_version_forgets_erased_objects_and_older_resets_for_good() {
        let object = |k: i64| ("Item".to_owned(), PrimaryKey::Int(k));
        // Items 1 and 2 were erased (at versions 3 and 5); item 4 exists.
        let objects = store_with(&[4]);
        let mut touches = Touches::default();
        for (key, version) in [(1, 3), (2, 5), (4, 2)] {
            touches.record(&item(key), version);
        }
        let mut stored = StoredView::default();
        let mut view = FileView::empty();
        view.hold([object(1), object(2), object(4)]);
        view.record_reset(object(4), 2, true);
        view.record_reset(object(6), 4, false);
        view.record_reset(object(4), 6, true);
        store(&mut view, &mut stored);
        let mut view = FileView::from_stored(&stored).unwrap();
        view.note_all_erased(&objects, &touches);

        assert!(
            !view.confirm(2, &objects, &touches),
            "nothing before version 2"
        );
        assert!(view.delta().is_none());
        assert!(view.confirm(4, &objects, &touches));
        assert!(!view.holds("Item", &PrimaryKey::Int(1)), "erased at 3");
        assert!(
            view.holds("Item", &PrimaryKey::Int(2)),
            "erased at 5, after 4"
        );
        assert_eq!(view.forgotten_at(), 4);
        // The reset at 4 is kept: the DOWNLOAD carrying it may not have moved the cursor.
        assert_eq!(view.reset_since(0), vec![object(4), object(6)]);
        assert!(
            !view.confirm(3, &objects, &touches),
            "confirmations only move forward"
        );
        store(&mut view, &mut stored);
        assert_eq!(FileView::from_stored(&stored).unwrap(), view);

        assert!(view.confirm(6, &objects, &touches));
        assert!(!view.holds("Item", &PrimaryKey::Int(2)));
        assert!(view.holds("Item", &PrimaryKey::Int(4)), "item 4 exists");
        assert_eq!(view.reset_since(0), vec![object(4)], "the reset at 6 stays");
        store(&mut view, &mut stored);
        let read = FileView::from_stored(&stored).unwrap();
        assert_eq!(read, view);
        assert_eq!(read.forgotten_at(), 6);
        assert_eq!(stored.objects.len(), 1, "only item 4's row is left");

        // A header from before views forgot anything reads with nothing forgotten.
        let mut old = vec![HEADER_FORMAT_UNFORGETTING, 1];
        crate::wire::write_u64(&mut old, 9);
        let read = FileView::from_stored(&StoredView {
            header: old,
            objects: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!((read.narrowed_at(), read.forgotten_at()), (9, 0));
    }

    #[test]
    fn backlinks_follow_links_as_they_are_set_moved_and_erased() {
        let object = |k: i64| ("Item".to_owned(), PrimaryKey::Int(k));
        let link = |from: i64, to: i64| Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(from), "link"),
            value: Value::Link(crate::value::Link {
                collection: "Item".into(),
                key: PrimaryKey::Int(to),
            }),
        };
        let mut store = store_with(&[1, 2, 3]);
        let mut backlinks = Backlinks::default();
        let apply = |store: &mut Store, backlinks: &mut Backlinks, i: Vec<Instruction>| {
            store
                .apply(&i, &mut crate::store::Changes::default())
                .unwrap();
            backlinks.record(store, &i);
        };
        let linking = |b: &Backlinks, k: i64| b.linking(&object(k)).cloned().collect::<Vec<_>>();
        apply(&mut store, &mut backlinks, vec![link(2, 1), link(3, 1)]);
        assert_eq!(linking(&backlinks, 1), vec![object(2), object(3)]);
        apply(&mut store, &mut backlinks, vec![link(3, 2)]);
        assert_eq!(linking(&backlinks, 1), vec![object(2)]);
        assert_eq!(linking(&backlinks, 2), vec![object(3)]);
        // An erased target keeps its sources (their links dangle); an erased source has none.
        let erase = |k: i64| Instruction::EraseObject {
            collection: "Item".into(),
            key: PrimaryKey::Int(k),
        };
        apply(&mut store, &mut backlinks, vec![erase(1)]);
        assert_eq!(linking(&backlinks, 1), vec![object(2)]);
        apply(&mut store, &mut backlinks, vec![erase(3)]);
        assert_eq!(linking(&backlinks, 2), Vec::<ObjectKey>::new());

        // Candidates grow by what reaches them through links, and by nothing else.
        apply(&mut store, &mut backlinks, item(4));
        apply(&mut store, &mut backlinks, vec![link(4, 2)]);
        let dependencies = vec![("Item".to_owned(), vec!["Item".to_owned()])];
        let mut candidates = BTreeSet::from([object(1)]);
        add_linking_objects(&backlinks, &dependencies, &mut candidates);
        assert_eq!(
            candidates,
            BTreeSet::from([object(1), object(2), object(4)])
        );
    }

    #[test]
    fn a_view_stored_whole_reads_and_is_stored_whole_again() {
        // The format views had when each was stored as one blob: held flag, held objects,
        // owed resets, last resets, narrowed_at.
        let held = encode_object_keys(&[("Item".into(), PrimaryKey::Int(1))]);
        let pending = encode_object_keys(&[("Item".into(), PrimaryKey::Int(2))]);
        let resets = encode_changeset(&[Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(3), PRIMARY_KEY),
            value: Value::Int(42),
        }]);
        let mut blob = vec![1];
        for part in [&held, &pending, &resets] {
            crate::wire::write_bytes(&mut blob, part);
        }
        crate::wire::write_u64(&mut blob, 7);
        let mut stored = StoredView {
            header: blob,
            objects: BTreeMap::new(),
        };
        let mut view = FileView::from_stored(&stored).unwrap();
        assert!(view.holds("Item", &PrimaryKey::Int(1)));
        assert!(view.owes_resets());
        assert_eq!(view.narrowed_at(), 7);
        assert_eq!(view.reset_since(42).len(), 1);
        assert!(view.delta().unwrap().whole);
        store(&mut view, &mut stored);
        assert_eq!(stored.objects.len(), 3);
        assert_eq!(FileView::from_stored(&stored).unwrap(), view);
        assert!(FileView::from_stored(&StoredView {
            header: vec![1, 200],
            objects: BTreeMap::new()
        })
        .is_err());
    }

    #[test]
    fn object_keys_of_every_type_survive_storage() {
        let keys = [
            PrimaryKey::Int(-5),
            PrimaryKey::String("ü x".into()),
            PrimaryKey::ObjectId(ObjectId([7; 12])),
            PrimaryKey::Uuid(Uuid([9; 16])),
        ];
        for key in keys {
            let object = ("Coll".to_owned(), key);
            assert_eq!(decode_object(&encode_object(&object)).unwrap(), object);
        }
        assert!(decode_object(&[]).is_err());
        let mut extra = encode_object(&("C".into(), PrimaryKey::Int(1)));
        extra.push(0);
        assert!(decode_object(&extra).is_err());
    }

    #[test]
    fn a_matcher_selects_by_query_and_read_filter() {
        let store = store_with(&[5, 50]);
        let schema = store.schema().clone();
        assert!(Matcher::new(&SubscriptionSet::default()).selects_everything(&schema));
        assert!(Matcher::new(&subscribe("TRUEPREDICATE")).selects_everything(&schema));
        let narrow = Matcher::new(&subscribe("n > 10"));
        assert!(!narrow.selects_everything(&schema));
        assert!(!narrow.selects(&store, "Item", &PrimaryKey::Int(5)));
        assert!(narrow.selects(&store, "Item", &PrimaryKey::Int(50)));
        assert!(!narrow.selects(&store, "Item", &PrimaryKey::Int(6)));

        let roles = crate::sim::sim_roles().unwrap();
        let readable = Matcher::new(&subscribe("TRUEPREDICATE")).with_reads(&roles, "u0");
        assert!(!readable.selects_everything(&schema));
        let store = store_with(&[5, 95]);
        assert!(readable.selects(&store, "Item", &PrimaryKey::Int(5)));
        assert!(!readable.selects(&store, "Item", &PrimaryKey::Int(95)));
    }

    #[test]
    fn a_write_filter_checks_the_object_before_and_after() {
        let roles = crate::sim::sim_roles().unwrap();
        let user = user_context("u0");
        let store = store_with(&[5, 85]);
        let set = |key: i64, n: i64| {
            vec![Instruction::Set {
                path: Path::field("Item", PrimaryKey::Int(key), "n"),
                value: Value::Int(n),
            }]
        };
        let object = |key: i64| ("Item", PrimaryKey::Int(key));
        let may = |key: i64, instructions: &[Instruction]| {
            let (c, k) = object(key);
            roles.may_write(&store, &user, (c, &k), instructions)
        };
        assert!(may(5, &set(5, 6)));
        assert!(!may(5, &set(5, 80)), "the result fails the filter");
        assert!(!may(85, &set(85, 1)), "the object failed it before");
        assert!(may(7, &item(7)), "a new object that passes");
        assert!(!may(81, &item(81)), "a new object that does not");
        let erase = [Instruction::EraseObject {
            collection: "Item".into(),
            key: PrimaryKey::Int(5),
        }];
        assert!(may(5, &erase));
    }
}
