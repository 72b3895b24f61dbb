//! A packed chunk's inputs as the pool's reader hears of them: an item
//! record in the ring (or forwarded by a keeper), or an `Item` frame. Each
//! outcome goes straight into the chunk's sink (`map::chunk`), with what
//! the input cost; the pool lock is taken once per chunk, to find it.

use super::*;

/// A packed chunk being reported, as the reader keeps it.
pub(super) struct Held {
    id: procpool_wire::TaskId,
    pub(super) part: std::sync::Arc<dyn crate::future::ResolveBytes>,
    submitted: Instant,
    /// What each of its inputs cost before a worker began it.
    sent: Sent,
    /// Its inputs' `total` for the run being handled (all of them end at
    /// the run's one clock read): the run's `now`, and the nanoseconds
    /// from `submitted` to it.
    total: std::cell::Cell<Option<(Instant, u64)>>,
}

impl Held {
    /// An input's `total`: from the chunk's submit to `now`.
    pub(super) fn total(&self, now: Instant) -> u64 {
        match self.total.get() {
            Some((at, ns)) if at == now => ns,
            _ => {
                let ns = nanos(now.saturating_duration_since(self.submitted));
                self.total.set(Some((now, ns)));
                ns
            }
        }
    }
}

/// What the parent spent on an input before a worker began it.
pub(super) struct Sent {
    /// Its encoding, in nanoseconds (a chunk's, shared out among its
    /// inputs; kept as an integer: a packed chunk's inputs add their costs
    /// up as integers, `ItemCost`).
    encode_ns: u64,
    /// Its encoded bytes (likewise).
    bytes_out: u64,
    /// Its task's wait in the pool's queue, from encoded to sent, in
    /// nanoseconds (a chunk input's wait behind the inputs before it comes
    /// from the worker).
    parent_queue_ns: u64,
}

impl Sent {
    /// For each of the `n` inputs of the task `meta`, sent at `assigned_at`.
    pub(super) fn of(meta: &Meta, assigned_at: Instant, n: u32) -> Sent {
        let encode = meta.encode / n;
        let parent_queue = assigned_at.saturating_duration_since(meta.submitted + meta.encode);
        Sent {
            encode_ns: nanos(encode),
            bytes_out: meta.bytes_out / u64::from(n),
            parent_queue_ns: nanos(parent_queue),
        }
    }

    /// [`cost`](Self::cost) of an input of a packed chunk, whose round trip
    /// took `total` nanoseconds (the parent's decode not yet in).
    pub(super) fn item(&self, timing: &WorkerTiming, bytes_back: usize, total: u64) -> ItemCost {
        ItemCost {
            encode_input: self.encode_ns,
            bytes_out: self.bytes_out,
            queue_wait: self.parent_queue_ns.saturating_add(timing.queue_ns),
            decode_input: timing.decode_ns,
            run: timing.run_ns,
            encode_output: timing.encode_ns,
            bytes_back: bytes_back as u64,
            decode_output: 0,
            total,
        }
    }

    /// The input's cost once its worker reports `timing` and an output of
    /// `bytes_back` bytes (`total` and the parent's decode not yet in).
    pub(super) fn cost(&self, timing: &WorkerTiming, bytes_back: usize) -> Cost {
        Cost {
            encode_input: Duration::from_nanos(self.encode_ns),
            bytes_out: self.bytes_out,
            queue_wait: Duration::from_nanos(self.parent_queue_ns.saturating_add(timing.queue_ns)),
            decode_input: Duration::from_nanos(timing.decode_ns),
            run: Duration::from_nanos(timing.run_ns),
            encode_output: Duration::from_nanos(timing.encode_ns),
            bytes_back: bytes_back as u64,
            ..Cost::default()
        }
    }
}

impl Reading<'_> {
    /// One input of a packed chunk ended, as a `ToParent::Item` frame.
    pub(super) fn item(&self, msg: ToParent, payloads: Vec<PayloadFds<'_>>) -> Flow {
        let ToParent::Item {
            id,
            index,
            outcome,
            timing,
            ..
        } = msg
        else {
            return Flow::Go;
        };
        let output = match outcome {
            Outcome::Ok { .. } => Ok(payloads.into_iter().next().unwrap_or((&[], Vec::new()))),
            other => Err(other),
        };
        self.item_ended(id, index, &timing, output)
    }

    /// Inputs of packed chunks ended `Ok`, as item records in the ring
    /// (see `ring::Record::Item`; the ring checked their lengths): the
    /// records from the next of `records` on, while they are item records.
    /// Those of one chunk in a row go into its sink together
    /// ([`Chunk::items_ok`](crate::map::chunk::Chunk::items_ok): one lock).
    pub(super) fn item_records<'b>(
        &self,
        records: &mut std::iter::Peekable<impl Iterator<Item = (ring::Record, &'b [u8], &'b [u8])>>,
    ) -> Flow {
        while let Some(&(ring::Record::Item, body, _)) = records.peek() {
            let Some((head, _)) = ring::ItemHead::parse(body) else {
                protocol_error(
                    self.shared,
                    self.idx,
                    self.generation,
                    self.pid,
                    format!("an item record of {} bytes", body.len()),
                );
                return Flow::Stop;
            };
            let id = head.id;
            let cache = self.hold(id);
            let Some(held) = cache.as_ref() else {
                records.next();
                tracing::warn!(target: "procpool::pool", { worker.id = self.idx, task.id = id },
                    "result of an input of an unknown chunk dropped");
                continue;
            };
            let Some(chunk) = held.part.as_chunk() else {
                drop(cache);
                self.not_a_chunk(id);
                return Flow::Stop;
            };
            let total = held.total(self.now.get());
            // This record and those after it of the same chunk (one that
            // does not parse is left to the next round, which reports it).
            let mut items = std::iter::from_fn(|| {
                let &(ring::Record::Item, body, followed) = records.peek()? else {
                    return None;
                };
                let (head, output) = ring::ItemHead::parse(body).filter(|(h, _)| h.id == id)?;
                let followed = &followed[body.len() - output.len()..];
                records.next();
                let timing = WorkerTiming {
                    queue_ns: head.queue_ns,
                    decode_ns: head.decode_ns,
                    run_ns: head.run_ns,
                    encode_ns: head.encode_ns,
                    peak_rss_bytes: 0,
                };
                let cost = held.sent.item(&timing, output.len(), total);
                Some((head.index, followed, output.len(), cost))
            });
            let cfg = &self.shared.cfg;
            let (mode, limit) = (cfg.shared_mode(), u64::from(cfg.max_frame));
            let costs = &mut self.costs.borrow_mut();
            let done = chunk.items_ok(&mut items, mode, limit, self.idx, costs);
            drop(cache);
            if let Err(message) = done {
                protocol_error(self.shared, self.idx, self.generation, self.pid, message);
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// The chunk booked as task `id`, in `self.chunk` (`None`: unknown),
    /// found under the pool lock once per chunk. The chunk held before,
    /// if another, is woken first: its inputs are all in, its map need not
    /// wait for the end of the run.
    fn hold(&self, id: procpool_wire::TaskId) -> std::cell::RefMut<'_, Option<Held>> {
        if self.chunk.borrow().as_ref().is_some_and(|h| h.id != id) {
            self.wake_chunk();
        }
        let mut cache = self.chunk.borrow_mut();
        if cache.as_ref().is_none_or(|h| h.id != id) {
            let st = lock(&self.shared.state);
            *cache = st.slots[self.idx].inflight.get(&id).map(|a| Held {
                id,
                part: a.meta.future.clone(),
                submitted: a.meta.submitted,
                sent: Sent::of(&a.meta, a.assigned_at, a.meta.items.max(1)),
                total: std::cell::Cell::new(None),
            });
        }
        cache
    }

    /// An input's result came for task `id`, which is not a chunk.
    fn not_a_chunk(&self, id: procpool_wire::TaskId) {
        protocol_error(
            self.shared,
            self.idx,
            self.generation,
            self.pid,
            format!("an input's result for task {id}, which is not a chunk"),
        );
    }

    /// One input of a packed chunk ended (its output, or the outcome that
    /// says why there is none): it goes straight into the chunk's sink (no
    /// pool lock, but once per chunk to find it).
    pub(super) fn item_ended(
        &self,
        id: procpool_wire::TaskId,
        index: u32,
        timing: &WorkerTiming,
        output: Result<PayloadFds<'_>, Outcome>,
    ) -> Flow {
        let shared = self.shared;
        let cache = self.hold(id);
        let Some(held) = cache.as_ref() else {
            tracing::warn!(target: "procpool::pool", { worker.id = self.idx, task.id = id },
                "result of an input of an unknown chunk dropped");
            return Flow::Go;
        };
        let Some(chunk) = held.part.as_chunk() else {
            drop(cache);
            self.not_a_chunk(id);
            return Flow::Stop;
        };
        let done = match output {
            Ok((bytes, fds)) => {
                let total = held.total(self.now.get());
                let cost = held.sent.item(timing, bytes.len(), total);
                let output = self.output(bytes, fds, &[], Vec::new());
                chunk.item_ok(index, output, self.idx, cost, &mut self.costs.borrow_mut())
            }
            Err(other) => {
                let (name, input_type, output_type) = chunk.types();
                let err = task_error_named(other, name, input_type, output_type, self.idx);
                self.costs.borrow_mut().failed();
                chunk.item_failed(index, err)
            }
        };
        drop(cache);
        match done {
            Ok(()) => Flow::Go,
            Err(message) => {
                protocol_error(shared, self.idx, self.generation, self.pid, message);
                Flow::Stop
            }
        }
    }
}
