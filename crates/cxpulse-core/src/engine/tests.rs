use super::*;

const SOURCE: SourcePartition = SourcePartition { topic: 0, partition: 0 };

fn engine_with(windows: &[&str]) -> Result<Engine, EngineError> {
    let windows = windows.iter().filter_map(|w| WindowSpec::named(w).ok()).collect();
    Engine::new(EngineConfig { windows, clock: ClockMode::Event, ..EngineConfig::default() })
}

fn records(batch: &CheckpointBatch) -> Vec<(String, Vec<u8>)> {
    batch.records.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn an_engine_needs_a_window() {
    let error = engine_with(&[]).err();
    assert_eq!(error, Some(EngineError::NoWindows));
    assert_eq!(error.map(|e| e.to_string()).as_deref(), Some("at least one window size is needed"));
}

#[test]
fn a_checkpoint_of_other_windows_is_refused_and_leaves_the_partition_to_replay() {
    let mut source = engine_with(&["1h", "24h"]).unwrap();
    let event = br#"{"event_id":"e","type":"survey_response","occurred_at":3600000,"brand":"b","survey":"nps","score":9}"#;
    assert_eq!(source.process(SOURCE, event, 3_600_000), Outcome::Counted);
    let batch = source.checkpoint(SOURCE, 1);

    let mut other = engine_with(&["1h"]).unwrap();
    let error = other.restore(SOURCE, &records(&batch), 0).unwrap_err();
    assert_eq!(
        error,
        RestoreError::OtherWindows {
            checkpoint_ms: vec![3_600_000, 86_400_000],
            configured_ms: vec![3_600_000]
        }
    );
    assert_eq!(
        error.to_string(),
        "checkpoint windows [3600000, 86400000] differ from the configured [3600000]"
    );
    assert!(other.snapshot(0).series.is_empty());
    // Its first checkpoint tombstones what it could not use (but never the manifest's key).
    assert_eq!(other.process(SOURCE, event, 3_600_000), Outcome::Counted);
    let next = other.checkpoint(SOURCE, 2);
    let parts = batch.records.len() - 1;
    assert_eq!(next.tombstones.len(), parts);
    assert!(!next.tombstones.contains(&crate::checkpoint::RecordKey::Manifest));

    let mut same = engine_with(&["1h", "24h"]).unwrap();
    assert_eq!(same.restore(SOURCE, &records(&batch), 0), Ok(1));
    assert_eq!(same.snapshot(0).series[0].windows[0].nps[0], 1);
    assert_eq!(same.restore(SOURCE, &[], 0), Err(RestoreError::NoCheckpoint));
}
