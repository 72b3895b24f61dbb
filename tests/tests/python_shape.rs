//! Python's shapes where its users expect them, on real worker processes:
//! `map_unordered(..).indexed()` (results with their input's index), a
//! whole-map `deadline(d)` beside the per-`next()` `timeout(d)`, and
//! `as_completed(..).deadline(d)` whose expiry is an item.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use procpool::{TaskError, as_completed};
use procpool_e2e::{process_pool_of, test_worker, watchdog};
use procpool_tasks::Sleep;

const LIMIT: Duration = Duration::from_secs(60);

fn sleeps(ms: &[u64]) -> impl Iterator<Item = Sleep> + '_ {
    ms.iter().map(|&millis| Sleep { millis })
}

#[test]
fn map_unordered_indexed_pairs_each_result_with_its_input() {
    watchdog(LIMIT, || {
        let pool = process_pool_of(test_worker!(), 2);
        let ms = [300, 0, 150, 0, 60, 0, 10, 5];
        let got: Vec<(usize, Result<u64, TaskError>)> =
            pool.map_unordered(sleeps(&ms)).indexed().collect();
        assert_eq!(got.len(), ms.len());
        let mut seen = vec![false; ms.len()];
        for (i, r) in &got {
            assert_eq!(
                r.as_ref().unwrap(),
                &ms[*i],
                "index {i} paired with another input"
            );
            assert!(!seen[*i], "index {i} twice");
            seen[*i] = true;
        }
        assert_ne!(got[0].0, 0, "the 300 ms input finished first? {got:?}");

        // The ordered map's indices are its positions.
        let idx: Vec<usize> = pool.map(sleeps(&ms)).indexed().map(|(i, _)| i).collect();
        assert_eq!(idx, (0..ms.len()).collect::<Vec<_>>());
    });
}

#[test]
fn timeout_limits_each_next_while_deadline_limits_the_whole_map() {
    watchdog(LIMIT, || {
        let pool = process_pool_of(test_worker!(), 1);
        let ms = [300; 4];

        // Per next(): each item takes ~300 ms < 1 s, so all four arrive
        // (~1.2 s in all).
        let got: Vec<_> = pool
            .map(sleeps(&ms))
            .timeout(Duration::from_secs(1))
            .collect();
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|r| r.is_ok()), "{got:?}");

        // The whole map: 500 ms. The first item (~300 ms) arrives; the
        // second would come at ~600 ms, so it is the time-out, and the end.
        let t0 = Instant::now();
        let got: Vec<_> = pool
            .map(sleeps(&ms))
            .deadline(Duration::from_millis(500))
            .collect();
        let took = t0.elapsed();
        assert!(got.len() < 4, "{got:?}");
        let (last, before) = got.split_last().unwrap();
        assert!(before.iter().all(|r| r.is_ok()), "{got:?}");
        assert_eq!(
            last,
            &Err(TaskError::WaitTimedOut {
                after: Duration::from_millis(500)
            })
        );
        assert!(took < Duration::from_millis(1100), "{took:?}");

        // Unordered, indexed: the time-out names an input still running.
        let got: Vec<_> = pool
            .map_unordered(sleeps(&[0, 1_500]))
            .deadline(Duration::from_millis(300))
            .indexed()
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], (0, Ok(0)));
        assert!(
            matches!(got[1], (1, Err(TaskError::WaitTimedOut { .. }))),
            "{got:?}"
        );

        procpool_e2e::still_works(&pool);
        // The same in one packed chunk (once the worker is free again):
        // its first input not yet taken.
        let got: Vec<_> = pool
            .map_unordered(sleeps(&[0, 0, 1_500, 0]))
            .chunksize(4)
            .deadline(Duration::from_millis(300))
            .indexed()
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        let mut done: Vec<_> = got[..2].iter().map(|(i, r)| (*i, r.clone())).collect();
        done.sort_by_key(|&(i, _)| i);
        assert_eq!(done, vec![(0, Ok(0)), (1, Ok(0))]);
        assert!(
            matches!(got[2], (2, Err(TaskError::WaitTimedOut { .. }))),
            "{got:?}"
        );
        procpool_e2e::still_works(&pool);
    });
}

#[test]
fn as_completed_deadline_yields_the_expiry_with_the_unfinished_futures() {
    watchdog(LIMIT, || {
        let pool = process_pool_of(test_worker!(), 2);
        let quick = pool.submit(Sleep { millis: 0 }).unwrap();
        let slow = pool.submit(Sleep { millis: 800 }).unwrap();
        let items: Vec<_> = as_completed([quick, slow])
            .deadline(Duration::from_millis(300))
            .collect();
        assert_eq!(items.len(), 2);
        let mut items = items.into_iter();
        assert_eq!(items.next().unwrap().unwrap().result().unwrap(), 0);
        let expired = items.next().unwrap().expect_err("the expiry is an item");
        assert!(
            expired.to_string().contains("1 future(s) not finished"),
            "{expired}"
        );
        assert_eq!(expired.after, Duration::from_millis(300));
        // Handed back untouched: it still finishes.
        let slow = expired.pending.into_iter().next().unwrap();
        assert_eq!(slow.result().unwrap(), 800);

        // Everything in time: no Err item at all.
        let fs: Vec<_> = (0..3)
            .map(|_| pool.submit(Sleep { millis: 0 }).unwrap())
            .collect();
        let items: Vec<_> = as_completed(fs).deadline(Duration::from_secs(10)).collect();
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|i| i.is_ok()));
    });
}
