//! A sink and its parts without a pool: the reader's and `settle`'s
//! calls made by hand.

use std::sync::Mutex;

use crate::waiting::{LOOK, Look};

use super::*;
use crate::cost::StatsCollector;

/// Records the task ids it is asked to cancel.
#[derive(Default)]
struct Cancels(Mutex<Vec<TaskId>>);

impl Control for Cancels {
    fn cancel(&self, id: u64) -> bool {
        self.0.lock().unwrap().push(id);
        true
    }
}

fn ok(part: &Part<u64>, index: u32, value: u64) {
    let bytes = codec::encode(&value).unwrap();
    let input = Input {
        bytes: &bytes,
        fds: Vec::new(),
        bulk: &[],
        bulk_bytes: Vec::new(),
        mode: crate::shared::Mode::Descriptors,
        limit: 1 << 20,
    };
    part.item_ok(
        index,
        input,
        0,
        ItemCost::default(),
        &mut CostBatch::default(),
    )
    .unwrap();
}

fn sink(n: usize) -> (Arc<Sink<u64>>, Arc<Cancels>) {
    let cancels = Arc::new(Cancels::default());
    (Sink::new(n, cancels.clone()), cancels)
}

#[test]
fn a_wait_that_looks_sees_an_outcome_put_meanwhile_and_keeps_its_deadline() {
    let (sink, _) = sink(2);
    let part = Arc::new(Part::new(sink.clone(), vec![0, 1], 7, "t", "I", "u64"));
    let p2 = part.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(LOOK / 2);
        ok(&p2, 0, 10);
        p2.wake();
    });
    // Looking or parked (the put may come after the look): seen either way.
    let mut look = Look::new(LOOK, true);
    let limit = Instant::now() + std::time::Duration::from_secs(10);
    assert!(sink.wait(0, Some(limit), &mut look));
    t.join().unwrap();
    // Input 1 never ends: the look finds nothing, the deadline holds,
    // and looking stops paying.
    let t0 = Instant::now();
    let mut look = Look::new(LOOK, true);
    assert!(!sink.wait(
        1,
        Some(t0 + std::time::Duration::from_millis(20)),
        &mut look
    ));
    assert!(t0.elapsed() >= std::time::Duration::from_millis(20));
    assert!(!look.pays());
}

#[test]
fn outcomes_wait_until_the_reader_wakes_the_map() {
    let (sink, _) = sink(3);
    let part = Part::new(sink.clone(), vec![0, 1, 2], 7, "t", "I", "u64");
    ok(&part, 0, 10);
    // Put quietly: there, but nobody was woken yet.
    assert!(sink.wait(0, Some(Instant::now()), &mut Look::new(LOOK, false)));
    assert!(!sink.wait(1, Some(Instant::now()), &mut Look::new(LOOK, true)));
    part.wake();
    assert_eq!(sink.take(0), Some(Ok(10)));
    assert_eq!(sink.take(0), None, "taken once");
    assert_eq!(part.ended(), 1);
}

#[test]
fn ended_outcomes_are_taken_together_up_to_the_first_still_running() {
    let (sink, _) = sink(4);
    let part = Part::new(sink.clone(), vec![0, 1, 2, 3], 7, "t", "I", "u64");
    for (i, v) in [(0, 10), (1, 11), (3, 13)] {
        ok(&part, i, v);
    }
    part.wake();
    let mut got = VecDeque::new();
    sink.take_ended(0, 4, &mut got);
    let values: Vec<_> = got.drain(..).map(|(r, _)| r).collect();
    assert_eq!(values, vec![Ok(10), Ok(11)], "stops at input 2");
    sink.take_ended(0, 4, &mut got);
    assert!(got.is_empty(), "taken once");
    ok(&part, 2, 12);
    part.wake();
    sink.take_ended(2, 4, &mut got);
    let values: Vec<_> = got.drain(..).map(|(r, _)| r).collect();
    assert_eq!(values, vec![Ok(12), Ok(13)]);
    sink.take_ended(3, 99, &mut got);
    assert!(got.is_empty(), "past the end: nothing");
}

#[test]
fn a_crash_splits_the_part_after_the_running_input() {
    let (sink, cancels) = sink(5);
    // Input 1 failed to encode: the part carries 0, 2, 3, 4.
    let part = Part::new(sink.clone(), vec![0, 2, 3, 4], 7, "t", "I", "u64");
    ok(&part, 0, 100);
    ok(&part, 1, 102);
    assert_eq!(part.ended(), 2);
    // The worker died running its input 2 (sink input 3): 4 goes on.
    let rest = part.split(3, 8);
    assert_eq!(part.len(), 3);
    assert!(part.fail(TaskError::Cancelled));
    assert_eq!(sink.take(3), Some(Err(TaskError::Cancelled)));
    assert_eq!(sink.take(4), None, "the rest is the new part's");
    let rest = rest.as_chunk().unwrap();
    assert_eq!(rest.len(), 1);
    rest.item_failed(0, TaskError::Shutdown).unwrap();
    rest.wake();
    assert_eq!(sink.take(4), Some(Err(TaskError::Shutdown)));
    // A dropped map cancels both parts.
    sink.cancel();
    assert_eq!(*cancels.0.lock().unwrap(), vec![7, 8]);
}

#[test]
fn a_bad_index_is_a_protocol_error_and_a_skipped_input_fails() {
    let (sink, _) = sink(2);
    let part = Part::new(sink.clone(), vec![0, 1], 7, "t", "I", "u64");
    assert!(part.item_failed(2, TaskError::Cancelled).is_err());
    ok(&part, 0, 1);
    let empty = Input {
        bytes: &[],
        fds: Vec::new(),
        bulk: &[],
        bulk_bytes: Vec::new(),
        mode: crate::shared::Mode::Descriptors,
        limit: 0,
    };
    let said = part.complete_bytes(
        empty,
        0,
        Cost::default(),
        Instant::now(),
        &StatsCollector::new(),
    );
    assert!(said.is_some_and(|m| m.contains("without reporting 1")));
    assert!(matches!(
        sink.take(1),
        Some(Err(TaskError::Protocol { .. }))
    ));
}

/// `values` one after another, as item records lie in a run (each
/// decode can look past its own bytes), with where each begins and its
/// length.
fn one_after_another(values: &[Vec<u8>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut all = Vec::new();
    let mut at = Vec::new();
    for v in values {
        at.push((all.len(), v.len()));
        all.extend_from_slice(v);
    }
    (all, at)
}

#[test]
fn a_run_of_items_goes_in_together_up_to_a_violation() {
    let (sink, _) = sink(4);
    let part = Part::new(sink.clone(), vec![0, 1, 2, 3], 7, "t", "I", "u64");
    let bytes: Vec<Vec<u8>> = (0..4u64)
        .map(|v| codec::encode(&(v * 10)).unwrap())
        .collect();
    let (all, at) = one_after_another(&bytes);
    // Inputs 0 and 1, a bad index, then input 3 (never reached).
    let mut items = [(1, 1), (0, 0), (9, 2), (3, 3)]
        .into_iter()
        .map(|(index, b)| (index, &all[at[b].0..], at[b].1, ItemCost::default()));
    let mut costs = CostBatch::default();
    let mode = crate::shared::Mode::Descriptors;
    let said = part.items_ok(&mut items, mode, 1 << 20, 0, &mut costs);
    assert!(said.is_err_and(|m| m.contains("input 9")));
    assert_eq!(items.next().map(|(i, ..)| i), Some(3), "left for later");
    part.wake();
    assert_eq!(sink.take(0), Some(Ok(0)));
    assert_eq!(sink.take(1), Some(Ok(10)));
    assert_eq!(sink.take(3), None);
    assert_eq!(part.ended(), 2);
}

#[test]
fn a_bad_shared_reference_in_a_run_fails_its_input_alone() {
    use crate::shared::{Mode, SharedBytes, encode_with};
    let cancels = Arc::new(Cancels::default());
    let sink: Arc<Sink<SharedBytes>> = Sink::new(3, cancels);
    let part = Part::new(sink.clone(), vec![0, 1, 2], 7, "t", "I", "SharedBytes");
    let small = SharedBytes::from(vec![1, 2, 3]);
    let encode = |v: &SharedBytes| {
        let (bytes, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(v));
        (bytes.unwrap(), enc.files.len())
    };
    let (inline, files) = encode(&small);
    assert_eq!(files, 0, "a small value travels inline");
    // A reference to a memory file the record does not carry.
    let (by_ref, files) = encode(&SharedBytes::from(vec![5; 1 << 20]));
    assert_eq!(files, 1);
    let (all, at) = one_after_another(&[inline.clone(), by_ref, inline]);
    let mut items = at
        .iter()
        .enumerate()
        .map(|(i, &(from, len))| (i as u32, &all[from..], len, ItemCost::default()));
    let mut costs = CostBatch::default();
    let said = part.items_ok(&mut items, Mode::Descriptors, 1 << 20, 0, &mut costs);
    assert!(said.is_err_and(|m| m.contains("bad shared-payload reference")));
    assert_eq!(items.next().map(|(i, ..)| i), Some(2), "left for later");
    part.wake();
    assert_eq!(sink.take(0), Some(Ok(small)));
    assert!(matches!(
        sink.take(1),
        Some(Err(TaskError::Protocol { .. }))
    ));
    assert_eq!(sink.take(2), None);
}

#[test]
fn the_unordered_map_hears_a_key_per_wake_and_takes_each_input_once() {
    #[derive(Default)]
    struct Keys(Mutex<Vec<usize>>);
    impl Watch for Keys {
        fn done(&self, key: usize) {
            self.0.lock().unwrap().push(key);
        }
    }
    let taken = |sink: &Sink<u64>| {
        let mut out = VecDeque::new();
        let n = sink.take_woken(100, &mut out);
        assert_eq!(n, out.len());
        out.into_iter()
            .map(|(k, r, _)| (k, r.map_err(|e| *e)))
            .collect::<Vec<_>>()
    };
    let (sink, _) = sink(4);
    let part = Part::new(sink.clone(), vec![0, 1, 2, 3], 7, "t", "I", "u64");
    ok(&part, 1, 1);
    part.wake();
    let keys = Arc::new(Keys::default());
    sink.watch(keys.clone(), 100);
    assert_eq!(*keys.0.lock().unwrap(), vec![101], "one woken before");
    ok(&part, 3, 3);
    ok(&part, 0, 0);
    assert_eq!(taken(&sink), vec![(101, Ok(1))], "not those not woken yet");
    part.wake();
    assert_eq!(*keys.0.lock().unwrap(), vec![101, 103], "one key a wake");
    assert_eq!(taken(&sink), vec![(100, Ok(0)), (103, Ok(3))]);
    assert_eq!(taken(&sink), vec![], "taken once");
    ok(&part, 2, 2);
    part.wake();
    assert_eq!(taken(&sink), vec![(102, Ok(2))]);
    part.wake();
    assert_eq!(keys.0.lock().unwrap().len(), 3, "no wake without news");
}
