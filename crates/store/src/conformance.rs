//! The behaviour every [`ModelStore`] must show: one async function per behaviour, each given a
//! fresh, empty store and panicking on a violation.
//!
//! [`model_store_conformance!`](crate::model_store_conformance) turns the whole list into
//! `#[tokio::test]`s for one implementation, given a harness that makes a fresh store, runs the
//! test on it and cleans up:
//!
//! ```ignore
//! async fn with_store<F, Fut>(test: F)
//! where
//!     F: FnOnce(Arc<dyn ModelStore>) -> Fut,
//!     Fut: Future<Output = ()>,
//! {
//!     let store = SqlStore::connect("sqlite::memory:").await.unwrap();
//!     test(Arc::new(store)).await;
//! }
//! verinet_store::model_store_conformance!(with_store);
//! ```

#![allow(clippy::unwrap_used, reason = "a test suite: a panic is how it reports a violation")]

use std::sync::Arc;

use verinet_primitives::{Address, DType, Dim, IoSignature, ModelId, TensorSpec};

use crate::{ModelQuery, ModelSort, ModelStore, ModelVersion, NewModelVersion, StoreError, Usage};

/// Generates one multi-threaded `#[tokio::test]` per conformance behaviour, each run through
/// `$harness`: an `async fn(test: F)` with `F: FnOnce(Arc<dyn ModelStore>) -> impl Future<Output = ()>`
/// that gives `test` a fresh, empty store. The calling crate needs `tokio` (macros, rt-multi-thread).
#[macro_export]
macro_rules! model_store_conformance {
    ($harness:path) => {
        $crate::model_store_conformance!(@tests $harness;
            round_trip, version_exists, not_owner, invalid_name, latest_by_semver, versions_newest_first,
            by_id_first_publication_owns_the_bytes, list_filters_sorts_and_pages, record_call_counts_usage,
            concurrent_first_publish_has_one_winner, concurrent_versions_keep_latest,
            concurrent_record_calls_are_not_lost);
    };
    (@tests $harness:path; $($test:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                $harness($crate::conformance::$test).await;
            }
        )*
    };
}

/// A test address: 20 times the byte `n`.
pub fn owner(n: u8) -> Address {
    Address::repeat_byte(n)
}

/// A plausible new version with distinct bytes per `name@version`.
pub fn sample(name: &str, version: &str, owner: Address) -> NewModelVersion {
    let version: semver::Version = version.parse().expect("test version is semver");
    NewModelVersion {
        id: ModelId::of_bytes(format!("{name}@{version}").as_bytes()),
        size: 1234,
        owner,
        description: format!("{name} model"),
        tags: vec!["test".into()],
        license: "MIT".into(),
        price: 1_000_000_000_000_000,
        signature: IoSignature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DType::Float32,
                shape: vec![Dim::Fixed(1), Dim::Fixed(4)],
            }],
            outputs: vec![TensorSpec { name: "y".into(), dtype: DType::Float32, shape: vec![Dim::Fixed(1)] }],
            ..Default::default()
        },
        publish_signature: format!("0x{}", "1b".repeat(65)),
        policy: Some(r#"{"sample_rate":0.5}"#.into()),
        token_prices: Some(verinet_primitives::wire::TokenPrices { prompt_per_1k: 7, completion_per_1k: 11 }),
        published_at_ms: 1_700_000_000_000,
        name: name.into(),
        version,
    }
}

fn ver(s: &str) -> semver::Version {
    s.parse().expect("test version is semver")
}

async fn insert(store: &Arc<dyn ModelStore>, v: &NewModelVersion) -> ModelVersion {
    match store.insert_version(v).await {
        Ok(got) => got,
        Err(e) => panic!("insert {}@{}: {e}", v.name, v.version),
    }
}

async fn names(store: &Arc<dyn ModelStore>, q: ModelQuery) -> Vec<String> {
    let desc = format!("{q:?}");
    let listed = store.list(&q).await.unwrap_or_else(|e| panic!("list {desc}: {e}"));
    listed.into_iter().map(|s| s.name).collect()
}

/// Every field comes back exactly as inserted, through every read path.
pub async fn round_trip(store: Arc<dyn ModelStore>) {
    let mut v = sample("round-trip", "1.2.3-beta.1+build.5", owner(0xab));
    v.price = u128::MAX - 1;
    v.size = 1 << 40;
    v.description = "Détecteur de chiffres 🧮 数字识别\n\"quotes\" 'single' back\\slash 100% under_score".into();
    v.tags = vec![];
    v.license = "Apache-2.0 OR MIT".into();
    v.signature = IoSignature {
        inputs: vec![
            TensorSpec {
                name: "pixels".into(),
                dtype: DType::Float32,
                shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(784)],
            },
            TensorSpec { name: "mask".into(), dtype: DType::Bool, shape: vec![] },
        ],
        outputs: vec![TensorSpec {
            name: "logits".into(),
            dtype: DType::Int64,
            shape: vec![Dim::Symbolic("batch".into())],
        }],
        // A language model's kind and facts round-trip with the rest of the signature.
        kind: verinet_primitives::ModelKind::Llm,
        language: Some(serde_json::json!({"context_length": 8192, "quantization": "q4_1"})),
    };
    v.publish_signature = format!("0x{}", "ab".repeat(65));
    v.published_at_ms = 1_712_345_678_901;

    let expected = ModelVersion::new(&v);
    assert_eq!(expected.usage, Usage::default());
    assert_eq!(insert(&store, &v).await, expected, "insert_version returns the stored record");
    assert_eq!(store.version(&v.name, &v.version).await.unwrap().as_ref(), Some(&expected));
    assert_eq!(store.latest(&v.name).await.unwrap().as_ref(), Some(&expected));
    assert_eq!(store.versions(&v.name).await.unwrap(), vec![expected.clone()]);
    assert_eq!(store.by_id(&v.id).await.unwrap().as_ref(), Some(&expected));
    assert_eq!(store.owner(&v.name).await.unwrap(), Some(v.owner));
    let listed = store.list(&ModelQuery::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].latest, expected);
    assert_eq!((listed[0].name.as_str(), listed[0].owner, listed[0].versions), (v.name.as_str(), v.owner, 1));

    // Tags keep their order and duplicates.
    let mut tagged = sample("tagged", "0.1.0", owner(0xab));
    tagged.tags = vec!["zeta".into(), "alpha".into(), "zeta".into(), "Ünïcode".into()];
    insert(&store, &tagged).await;
    let got = store.version("tagged", &tagged.version).await.unwrap().expect("stored");
    assert_eq!(got.tags, tagged.tags);

    // Absent things are None or empty, not errors.
    assert_eq!(store.version(&v.name, &ver("9.9.9")).await.unwrap(), None);
    assert_eq!(store.version("absent", &ver("1.0.0")).await.unwrap(), None);
    assert_eq!(store.latest("absent").await.unwrap(), None);
    assert_eq!(store.owner("absent").await.unwrap(), None);
    assert!(store.versions("absent").await.unwrap().is_empty());
    assert_eq!(store.by_id(&ModelId::of_bytes(b"nothing")).await.unwrap(), None);
}

/// A published version is immutable: publishing it again fails and changes nothing.
pub async fn version_exists(store: Arc<dyn ModelStore>) {
    let v = sample("dup", "1.0.0", owner(1));
    insert(&store, &v).await;
    let mut again = v.clone();
    again.id = ModelId::of_bytes(b"other bytes");
    again.description = "changed".into();
    match store.insert_version(&again).await {
        Err(StoreError::VersionExists { name, version }) => {
            assert_eq!((name, version), (v.name.clone(), v.version.clone()))
        }
        other => panic!("expected VersionExists, got {other:?}"),
    }
    assert_eq!(store.version("dup", &v.version).await.unwrap(), Some(ModelVersion::new(&v)));
    assert_eq!(store.versions("dup").await.unwrap().len(), 1);
    assert_eq!(store.by_id(&again.id).await.unwrap(), None);
}

/// Only the first publisher of a name may publish more versions of it.
pub async fn not_owner(store: Arc<dyn ModelStore>) {
    insert(&store, &sample("owned", "1.0.0", owner(1))).await;
    for version in ["1.1.0", "1.0.0"] {
        match store.insert_version(&sample("owned", version, owner(2))).await {
            Err(StoreError::NotOwner { name, owner: o }) => assert_eq!((name.as_str(), o), ("owned", owner(1))),
            other => panic!("expected NotOwner for {version}, got {other:?}"),
        }
    }
    assert_eq!(store.versions("owned").await.unwrap().len(), 1);
    assert_eq!(store.owner("owned").await.unwrap(), Some(owner(1)));
    insert(&store, &sample("owned", "1.1.0", owner(1))).await;
    insert(&store, &sample("other-name", "1.0.0", owner(2))).await;
    assert_eq!(store.owner("other-name").await.unwrap(), Some(owner(2)));
}

/// Names that break the naming rules are refused before anything is written.
pub async fn invalid_name(store: Arc<dyn ModelStore>) {
    for bad in ["Bad", "a b", "-x", ""] {
        match store.insert_version(&sample(bad, "1.0.0", owner(1))).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("expected Invalid for {bad:?}, got {other:?}"),
        }
        assert_eq!(store.owner(bad).await.unwrap(), None);
    }
}

/// `latest` follows semver precedence, not publish order or text order.
pub async fn latest_by_semver(store: Arc<dyn ModelStore>) {
    let latest = |store: Arc<dyn ModelStore>| async move {
        store.latest("semver").await.unwrap().expect("has versions").version.to_string()
    };
    // Each step: publish, then the expected latest. "Last published" would be wrong after 1.2.0,
    // 0.1.0 and 2.0.0-rc.2; "greatest text" after 1.10.0 and 1.2.0.
    let steps = [
        ("1.9.0", "1.9.0"),
        ("1.10.0", "1.10.0"),
        ("1.2.0", "1.10.0"),
        ("2.0.0-rc.1", "2.0.0-rc.1"),
        ("0.1.0", "2.0.0-rc.1"),
        ("2.0.0", "2.0.0"),
        ("2.0.0-rc.2", "2.0.0"),
    ];
    for (i, (publish, expected)) in steps.into_iter().enumerate() {
        let mut new = sample("semver", publish, owner(1));
        new.published_at_ms += i as i64;
        insert(&store, &new).await;
        assert_eq!(latest(store.clone()).await, expected, "after publishing {publish}");
    }
    let listed = store.list(&ModelQuery::default()).await.unwrap();
    assert_eq!(listed[0].latest.version, ver("2.0.0"));
    assert_eq!(listed[0].versions, 7);
}

/// `versions` lists highest semver first and only the asked name.
pub async fn versions_newest_first(store: Arc<dyn ModelStore>) {
    for v in ["1.0.0", "1.10.0", "1.2.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "0.9.9"] {
        insert(&store, &sample("ordered", v, owner(1))).await;
    }
    insert(&store, &sample("ordered-other", "5.0.0", owner(1))).await;
    let got: Vec<String> = store.versions("ordered").await.unwrap().iter().map(|v| v.version.to_string()).collect();
    assert_eq!(got, ["1.10.0", "1.2.0", "1.0.0", "1.0.0-beta", "1.0.0-alpha.1", "1.0.0-alpha", "0.9.9"]);
}

/// A content hash has one owner: the first publisher of some bytes may publish them again (a
/// new version, another name of theirs); another key may not, under any name. `by_id`
/// resolves to the first publication.
pub async fn by_id_first_publication_owns_the_bytes(store: Arc<dyn ModelStore>) {
    let shared = ModelId::of_bytes(b"shared bytes");
    for (name, version, who, at) in [("first", "1.1.0", 1, 2_000), ("first", "1.0.0", 1, 1_000), ("alias", "1.0.0", 1, 3_000)] {
        let mut v = sample(name, version, owner(who));
        v.id = shared;
        v.published_at_ms = at;
        insert(&store, &v).await;
    }
    let mut copy = sample("copy", "1.0.0", owner(2));
    copy.id = shared;
    copy.published_at_ms = 4_000;
    match store.insert_version(&copy).await {
        Err(StoreError::ContentOwned { id, owner: o, name }) => {
            assert_eq!((id, o, name.as_str()), (shared.to_string(), owner(1), "first"));
        }
        other => panic!("expected ContentOwned, got {other:?}"),
    }
    // Nothing of the copy was written: not its name either.
    assert_eq!(store.owner("copy").await.unwrap(), None);
    assert!(store.versions("copy").await.unwrap().is_empty());
    let got = store.by_id(&shared).await.unwrap().expect("found");
    assert_eq!((got.name.as_str(), got.version.to_string().as_str(), got.owner), ("first", "1.0.0", owner(1)));
    let unique = sample("unique", "1.0.0", owner(3));
    insert(&store, &unique).await;
    assert_eq!(store.by_id(&unique.id).await.unwrap(), Some(ModelVersion::new(&unique)));
}

/// `list`: text search, tag filter, every sort, limit and offset.
pub async fn list_filters_sorts_and_pages(store: Arc<dyn ModelStore>) {
    // (name, version, description, tags, published_at)
    let rows: [(&str, &str, &str, &[&str], i64); 8] = [
        ("alpha-vision", "1.0.0", "Image classifier", &["vision", "cnn"], 1_000),
        ("beta_text", "1.0.0", "Sentiment of TEXT", &["nlp"], 2_000),
        ("gamma", "1.0.0", "100% pure_math", &["math", "nlp-free"], 3_000),
        ("a.delta", "1.0.0", "", &[], 4_000),
        ("alpha-vision", "1.1.0", "Image classifier v2 ÉCLAIR", &["vision", "CNN"], 5_000),
        ("zeta", "2.0.0", "new", &["nlp"], 6_000),
        // Older than zeta@2.0.0 although published later: its text must not match.
        ("zeta", "1.0.0", "old stuff", &["legacy"], 7_000),
        // Byte order puts "alpha-vision" first, PostgreSQL's locale collations "alphabet".
        ("alphabet", "1.0.0", "letters", &["text"], 500),
    ];
    for (name, version, description, tags, at) in rows {
        let mut v = sample(name, version, owner(7));
        v.description = description.into();
        v.tags = tags.iter().map(|t| t.to_string()).collect();
        v.published_at_ms = at;
        insert(&store, &v).await;
    }
    let by_name = ["a.delta", "alpha-vision", "alphabet", "beta_text", "gamma", "zeta"];
    let query = |q: Option<&str>, tag: Option<&str>| ModelQuery {
        q: q.map(Into::into),
        tag: tag.map(Into::into),
        sort: ModelSort::Name,
        ..ModelQuery::default()
    };

    // No calls yet: usage order falls back to name order.
    assert_eq!(names(&store, ModelQuery::default()).await, by_name);
    assert_eq!(names(&store, query(None, None)).await, by_name);
    let newest = ModelQuery { sort: ModelSort::Newest, ..ModelQuery::default() };
    assert_eq!(names(&store, newest).await, ["zeta", "alpha-vision", "a.delta", "gamma", "beta_text", "alphabet"]);

    assert_eq!(names(&store, query(Some("CLASSIFIER"), None)).await, ["alpha-vision"]);
    assert_eq!(names(&store, query(Some("éclair"), None)).await, ["alpha-vision"], "unicode case folding");
    assert_eq!(names(&store, query(Some("vision"), None)).await, ["alpha-vision"]);
    assert_eq!(names(&store, query(Some("nlp"), None)).await, ["beta_text", "gamma", "zeta"], "tags are searched");
    assert_eq!(names(&store, query(Some("_"), None)).await, ["beta_text", "gamma"], "_ is literal");
    assert_eq!(names(&store, query(Some("%"), None)).await, ["gamma"], "% is literal");
    assert_eq!(names(&store, query(Some("legacy"), None)).await, Vec::<String>::new(), "only the latest version");
    assert_eq!(names(&store, query(Some("old stuff"), None)).await, Vec::<String>::new());
    assert_eq!(names(&store, query(Some(""), None)).await, by_name, "empty q filters nothing");

    assert_eq!(names(&store, query(None, Some("nlp"))).await, ["beta_text", "zeta"], "exact tag");
    assert_eq!(names(&store, query(None, Some("CNN"))).await, ["alpha-vision"]);
    assert_eq!(names(&store, query(None, Some("cnn"))).await, Vec::<String>::new(), "tags are case-sensitive");
    assert_eq!(names(&store, query(None, Some("legacy"))).await, Vec::<String>::new(), "only the latest version");
    assert_eq!(names(&store, query(Some("TEXT"), Some("nlp"))).await, ["beta_text"]);

    let page = |limit, offset| ModelQuery { limit, offset, ..query(None, None) };
    assert_eq!(names(&store, page(2, 0)).await, by_name[..2]);
    assert_eq!(names(&store, page(2, 2)).await, by_name[2..4]);
    assert_eq!(names(&store, page(4, 4)).await, by_name[4..]);
    assert_eq!(names(&store, page(2, 100)).await, Vec::<String>::new());
    assert_eq!(names(&store, page(0, 0)).await, by_name, "0 means the default limit");
    assert_eq!(names(&store, page(u32::MAX, 1)).await, by_name[1..], "limit is capped, not overflowed");

    let listed = store.list(&query(Some("vision"), None)).await.unwrap();
    assert_eq!(listed[0].versions, 2);
    assert_eq!(listed[0].latest.version, ver("1.1.0"));
    assert_eq!(listed[0].latest.tags, ["vision", "CNN"]);
    assert_eq!(listed[0].owner, owner(7));
}

/// Calls and failures count per version, sum per model, and order the default listing.
pub async fn record_call_counts_usage(store: Arc<dyn ModelStore>) {
    for (name, version) in
        [("zzz-used", "1.0.0"), ("zzz-used", "2.0.0"), ("aaa-idle", "1.0.0"), ("mmm-failing", "1.0.0")]
    {
        insert(&store, &sample(name, version, owner(1))).await;
    }
    let (v1, v2) = (ver("1.0.0"), ver("2.0.0"));
    for (version, ok, at) in [(&v1, true, 100), (&v1, false, 300), (&v2, true, 200), (&v2, true, 150)] {
        store.record_call("zzz-used", version, ok, at).await.unwrap();
    }
    for at in [10, 20, 30] {
        store.record_call("mmm-failing", &v1, false, at).await.unwrap();
    }
    let usage = |store: Arc<dyn ModelStore>, version: semver::Version| async move {
        store.version("zzz-used", &version).await.unwrap().expect("stored").usage
    };
    assert_eq!(usage(store.clone(), v1.clone()).await, Usage { calls: 1, failures: 1, last_called_at_ms: Some(300) });
    assert_eq!(usage(store.clone(), v2.clone()).await, Usage { calls: 2, failures: 0, last_called_at_ms: Some(200) });

    let listed = store.list(&ModelQuery::default()).await.unwrap();
    let order: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["zzz-used", "aaa-idle", "mmm-failing"], "most calls first; failures are not calls");
    assert_eq!(listed[0].usage, Usage { calls: 3, failures: 1, last_called_at_ms: Some(300) });
    assert_eq!(listed[0].latest.usage, Usage { calls: 2, failures: 0, last_called_at_ms: Some(200) });
    assert_eq!(listed[1].usage, Usage::default());
    assert_eq!(listed[2].usage, Usage { calls: 0, failures: 3, last_called_at_ms: Some(30) });

    // A flushed batch adds its counts at once and keeps the latest time.
    store.record_calls("aaa-idle", &v1, 5, 2, 40).await.unwrap();
    store.record_calls("aaa-idle", &v1, 1, 0, 35).await.unwrap();
    assert_eq!(
        store.version("aaa-idle", &v1).await.unwrap().expect("stored").usage,
        Usage { calls: 6, failures: 2, last_called_at_ms: Some(40) }
    );

    for (name, version) in [("zzz-used", ver("3.0.0")), ("absent", v1.clone())] {
        match store.record_call(name, &version, true, 1).await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected NotFound for {name}@{version}, got {other:?}"),
        }
    }
}

/// Two owners racing to publish a new name: exactly one wins, the other is told who owns it.
pub async fn concurrent_first_publish_has_one_winner(store: Arc<dyn ModelStore>) {
    for round in 0..10 {
        let name = format!("race-{round}");
        // Half the rounds race the same version, half different ones.
        let (va, vb) = if round % 2 == 0 { ("1.0.0", "1.0.0") } else { ("1.0.0", "1.0.1") };
        let a = sample(&name, va, owner(1));
        let b = sample(&name, vb, owner(2));
        let (sa, sb) = (store.clone(), store.clone());
        let ta = tokio::spawn(async move { sa.insert_version(&a).await });
        let tb = tokio::spawn(async move { sb.insert_version(&b).await });
        let (ra, rb) = (ta.await.expect("task"), tb.await.expect("task"));
        let (winner, loser) = match (&ra, &rb) {
            (Ok(_), Err(e)) => (owner(1), e),
            (Err(e), Ok(_)) => (owner(2), e),
            _ => panic!("round {round}: expected exactly one winner, got {ra:?} and {rb:?}"),
        };
        match loser {
            StoreError::NotOwner { name: n, owner: o } => assert_eq!((n, *o), (&name, winner)),
            other => panic!("round {round}: expected NotOwner, got {other:?}"),
        }
        assert_eq!(store.owner(&name).await.unwrap(), Some(winner));
        let versions = store.versions(&name).await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].owner, winner);
    }

    // One owner racing itself with the same version: one insert, one VersionExists.
    let v = sample("self-race", "1.0.0", owner(3));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (s, v) = (store.clone(), v.clone());
            tokio::spawn(async move { s.insert_version(&v).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().any(|r| matches!(r, Err(StoreError::VersionExists { .. }))), "{results:?}");
}

/// Versions of one name published concurrently all land, and `latest` is still the highest.
pub async fn concurrent_versions_keep_latest(store: Arc<dyn ModelStore>) {
    for round in 0..3 {
        let name = format!("busy-{round}");
        insert(&store, &sample(&name, "0.1.0", owner(1))).await;
        // Highest first: a lost update of `latest` then leaves a lower version behind.
        let tasks: Vec<_> = (0..20)
            .rev()
            .map(|minor| {
                let (store, new) = (store.clone(), sample(&name, &format!("1.{minor}.0"), owner(1)));
                tokio::spawn(async move { store.insert_version(&new).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("insert");
        }
        assert_eq!(store.versions(&name).await.unwrap().len(), 21);
        assert_eq!(store.latest(&name).await.unwrap().expect("has versions").version, ver("1.19.0"), "{name}");
    }
}

/// Concurrent `record_call`s of one version are all counted.
pub async fn concurrent_record_calls_are_not_lost(store: Arc<dyn ModelStore>) {
    insert(&store, &sample("hot", "1.0.0", owner(1))).await;
    let tasks: Vec<_> = (0..60)
        .map(|i: i64| {
            let store = store.clone();
            tokio::spawn(async move { store.record_call("hot", &ver("1.0.0"), i < 50, 1_000 + i).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("record_call");
    }
    let usage = store.version("hot", &ver("1.0.0")).await.unwrap().expect("stored").usage;
    assert_eq!(usage, Usage { calls: 50, failures: 10, last_called_at_ms: Some(1_059) });
}
