//! The records a reply ring holds, outside the ring: a packed chunk's
//! compact input result ([`ItemHead`], the head of a [`Record::Item`]) and
//! runs of records as a worker's keeper forwards them over a network link
//! (`ToParent::Records`: packed by a [`Packer`], read back by [`records`]).

use super::{ITEM, ITEM_HEAD, MARKER, Record};

/// The head of an item record (see [`Record::Item`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemHead {
    pub id: u64,
    pub index: u32,
    pub queue_ns: u64,
    pub decode_ns: u64,
    pub run_ns: u64,
    pub encode_ns: u64,
}

impl ItemHead {
    pub(crate) fn to_bytes(self) -> [u8; ITEM_HEAD] {
        let mut b = [0u8; ITEM_HEAD];
        b[..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.index.to_le_bytes());
        let times = [self.queue_ns, self.decode_ns, self.run_ns, self.encode_ns];
        for (i, t) in times.iter().enumerate() {
            b[12 + 8 * i..20 + 8 * i].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    /// An item record's head and output (the ring checked its length).
    pub(crate) fn parse(body: &[u8]) -> Option<(ItemHead, &[u8])> {
        let (head, output) = body.split_at_checked(ITEM_HEAD)?;
        let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or([0; 8]));
        let index = u32::from_le_bytes(head[8..12].try_into().unwrap_or([0; 4]));
        Some((
            ItemHead {
                id: u64_at(0),
                index,
                queue_ns: u64_at(12),
                decode_ns: u64_at(20),
                run_ns: u64_at(28),
                encode_ns: u64_at(36),
            },
            output,
        ))
    }
}

/// What a record's length `word` says, checked: `Ok(None)` for a marker,
/// else the record's kind and body length, which is within `max_frame`
/// and the `after` bytes that follow the word (and, for an item record, at
/// least its head). Whatever reads a ring reads its records so;
/// [`records`] reads forwarded ones, packed.
pub(super) fn length_word(
    word: u32,
    max_frame: u32,
    after: u64,
) -> Result<Option<(Record, u32)>, String> {
    let (record, len) = match word {
        MARKER => return Ok(None),
        w if w & ITEM != 0 => (Record::Item, w & !ITEM),
        w => (Record::Frame, w),
    };
    if len > max_frame || u64::from(len) > after {
        return Err(format!(
            "a record of {len} bytes with {after} bytes after its length (cap {max_frame})"
        ));
    }
    if record == Record::Item && (len as usize) < ITEM_HEAD {
        return Err(format!(
            "an item record of {len} bytes (its head alone is {ITEM_HEAD})"
        ));
    }
    Ok(Some((record, len)))
}

/// What a keeper forwards in a `ToParent::Records` payload: runs of
/// entries, each a little-endian u32 word and what it announces.
///
/// * A note: the word is its body's length (as in the ring), the body
///   follows.
/// * An item record, packed (the ring's [`ITEM_HEAD`]-byte head is most of
///   a small input's bytes, and every byte forwarded is hashed twice, by
///   the keeper's seal and the pool's open): the word is [`ITEM`] | the
///   output's length; then a flags byte; the task id (u64) if
///   [`NEW_ID`], else the previous item's; the input index (u32) if
///   [`NEW_INDEX`], else the previous item's + 1; the four worker times
///   (queue, decode, run, encode nanoseconds), u64 each if [`WIDE`], else
///   u32 each; then the output. "Previous" is within the same payload: the
///   first item of a payload names its id and index.
///
/// A marker never travels (the keeper stops at one).
#[cfg(feature = "remote")]
#[derive(Debug, Default)]
pub(crate) struct Packer {
    /// The last item packed into this payload: its id and index.
    last: Option<(u64, u32)>,
}

/// Packed item flags: the id follows.
const NEW_ID: u8 = 1;
/// Packed item flags: the index follows.
const NEW_INDEX: u8 = 2;
/// Packed item flags: the times are u64, not u32.
const WIDE: u8 = 4;

#[cfg(feature = "remote")]
impl Packer {
    /// Starts a new payload: its first item names its id and index.
    pub(crate) fn restart(&mut self) {
        self.last = None;
    }

    /// Appends a record of the ring (`body` as the ring held it; an item
    /// record's at least [`ITEM_HEAD`] bytes: the ring checked) to `out`.
    pub(crate) fn put(&mut self, out: &mut Vec<u8>, record: Record, body: &[u8]) {
        let Some((head, output)) = (record == Record::Item)
            .then(|| ItemHead::parse(body))
            .flatten()
        else {
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            return;
        };
        out.extend_from_slice(&(ITEM | output.len() as u32).to_le_bytes());
        let last = self.last.replace((head.id, head.index));
        let new_id = last.is_none_or(|(id, _)| id != head.id);
        let new_index = last.is_none_or(|(_, i)| i.checked_add(1) != Some(head.index));
        let times = [head.queue_ns, head.decode_ns, head.run_ns, head.encode_ns];
        let wide = times.iter().any(|&t| t > u64::from(u32::MAX));
        let flags = if new_id { NEW_ID } else { 0 }
            | if new_index { NEW_INDEX } else { 0 }
            | if wide { WIDE } else { 0 };
        out.push(flags);
        if new_id {
            out.extend_from_slice(&head.id.to_le_bytes());
        }
        if new_index {
            out.extend_from_slice(&head.index.to_le_bytes());
        }
        for t in times {
            if wide {
                out.extend_from_slice(&t.to_le_bytes());
            } else {
                out.extend_from_slice(&(t as u32).to_le_bytes());
            }
        }
        out.extend_from_slice(output);
    }
}

/// An entry of a forwarded payload (see [`Packer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarded<'a> {
    /// A note's body.
    Note(&'a [u8]),
    /// An input ended `Ok`: its head and output.
    Item(ItemHead, &'a [u8]),
}

/// Takes `n` bytes off the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (front, rest) = bytes.split_at_checked(n)?;
    *bytes = rest;
    Some(front)
}

fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?))
}

fn take_u32(bytes: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?))
}

/// A packed item (after its word): its head and output, or `None` if the
/// bytes are none (cut, unknown flags, no id or index to go on from).
fn unpack<'a>(
    bytes: &mut &'a [u8],
    output_len: usize,
    last: Option<(u64, u32)>,
) -> Option<(ItemHead, &'a [u8])> {
    let flags = *take(bytes, 1)?.first()?;
    if flags & !(NEW_ID | NEW_INDEX | WIDE) != 0 {
        return None;
    }
    let id = if flags & NEW_ID != 0 {
        take_u64(bytes)?
    } else {
        last?.0
    };
    let index = if flags & NEW_INDEX != 0 {
        take_u32(bytes)?
    } else {
        last?.1.checked_add(1)?
    };
    let mut times = [0u64; 4];
    for t in &mut times {
        *t = if flags & WIDE != 0 {
            take_u64(bytes)?
        } else {
            u64::from(take_u32(bytes)?)
        };
    }
    let [queue_ns, decode_ns, run_ns, encode_ns] = times;
    let head = ItemHead {
        id,
        index,
        queue_ns,
        decode_ns,
        run_ns,
        encode_ns,
    };
    Some((head, take(bytes, output_len)?))
}

/// The entries of a `ToParent::Records` payload (see [`Packer`]); `Err` if
/// the bytes are no such entries (a marker, a length past the end or over
/// `max_frame`, a packed item cut or without an id to go on from), and
/// nothing after it.
pub(crate) fn records(
    mut bytes: &[u8],
    max_frame: u32,
) -> impl Iterator<Item = Result<Forwarded<'_>, String>> {
    let mut last = None;
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let found = match take_u32(&mut bytes) {
            None => Err("forwarded records: a cut length".to_owned()),
            Some(MARKER) => Err("forwarded records: a marker".to_owned()),
            Some(w) if w & ITEM != 0 => {
                let len = w & !ITEM;
                if len > max_frame {
                    Err(format!(
                        "forwarded records: an output of {len} bytes (cap {max_frame})"
                    ))
                } else {
                    unpack(&mut bytes, len as usize, last)
                        .inspect(|(head, _)| last = Some((head.id, head.index)))
                        .map(|(head, output)| Forwarded::Item(head, output))
                        .ok_or_else(|| "forwarded records: a broken item".to_owned())
                }
            }
            Some(len) if len > max_frame => Err(format!(
                "forwarded records: a note of {len} bytes (cap {max_frame})"
            )),
            Some(len) => take(&mut bytes, len as usize)
                .map(Forwarded::Note)
                .ok_or_else(|| format!("forwarded records: a note of {len} bytes, cut")),
        };
        if found.is_err() {
            bytes = &[];
        }
        Some(found)
    })
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "remote")]
    use super::super::LEN;
    use super::*;

    #[test]
    #[cfg(feature = "remote")]
    fn forwarded_records_read_back_as_put() {
        let head = |id: u64, index: u32, run_ns: u64| ItemHead {
            id,
            index,
            queue_ns: 1000,
            decode_ns: 20,
            run_ns,
            encode_ns: 30,
        };
        let item = |h: ItemHead, out: &[u8]| [&h.to_bytes()[..], out].concat();
        // Same chunk in a row, an index gap, another chunk, a long run
        // (wide times), a note between.
        let heads = [
            head(3, 0, 5),
            head(3, 1, 5),
            head(3, 7, 5),
            head(4, 8, u64::from(u32::MAX) + 1),
            head(4, 9, 6),
            head(4, u32::MAX, 6),
        ];
        let mut out = Vec::new();
        let mut packer = Packer::default();
        packer.put(&mut out, Record::Frame, b"note");
        for (i, h) in heads.iter().enumerate() {
            packer.put(&mut out, Record::Item, &item(*h, &[i as u8; 9]));
            if i == 2 {
                packer.put(&mut out, Record::Frame, b"");
            }
        }
        // A chunk's inputs in a row: the word, the flags, four u32 times
        // and the output each (the first also its id and index).
        let mut row = Vec::new();
        let mut p = Packer::default();
        for i in 0..100 {
            p.put(&mut row, Record::Item, &item(head(5, i, 7), &[0; 9]));
        }
        assert_eq!(row.len(), 100 * (LEN + 1 + 16 + 9) + 12);
        let got: Vec<_> = records(&out, 1 << 20).collect::<Result<_, _>>().unwrap();
        let mut want = vec![Forwarded::Note(&b"note"[..])];
        let outputs: Vec<[u8; 9]> = (0..heads.len()).map(|i| [i as u8; 9]).collect();
        for (i, h) in heads.iter().enumerate() {
            want.push(Forwarded::Item(*h, &outputs[i][..]));
            if i == 2 {
                want.push(Forwarded::Note(&b""[..]));
            }
        }
        assert_eq!(got, want);
        // A new payload names its id and index again.
        packer.restart();
        let mut second = Vec::new();
        packer.put(&mut second, Record::Item, &item(head(4, 10, 1), b"x"));
        let got: Vec<_> = records(&second, 1 << 20).collect();
        assert_eq!(got, vec![Ok(Forwarded::Item(head(4, 10, 1), &b"x"[..]))]);
        // Cut anywhere, lying, a marker, an item with no id to go on from,
        // unknown flags: an error, then nothing.
        let mut bad: Vec<Vec<u8>> = (1..out.len()).map(|n| out[..n].to_vec()).collect();
        bad.retain(|b| records(b, 1 << 20).any(|r| r.is_err()));
        assert!(bad.len() > out.len() / 2, "cuts that still read: too many");
        bad.push(vec![9, 0, 0, 0, 1]);
        bad.push(MARKER.to_le_bytes().to_vec());
        bad.push([&(ITEM | 1).to_le_bytes()[..], &[0], &[0; 16], b"x"].concat());
        bad.push([&(ITEM | 1).to_le_bytes()[..], &[8 | NEW_ID | NEW_INDEX]].concat());
        for b in &bad {
            let got: Vec<_> = records(b, 1 << 20).collect();
            assert!(got.last().is_some_and(Result::is_err), "{b:?}: {got:?}");
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1, "{b:?}");
        }
        assert!(records(&out, 3).next().unwrap().is_err(), "over the cap");
    }

    #[test]
    fn an_item_head_reads_back_as_written() {
        let head = ItemHead {
            id: u64::MAX - 3,
            index: 7,
            queue_ns: 1,
            decode_ns: 2,
            run_ns: u64::MAX,
            encode_ns: 4,
        };
        let mut body = head.to_bytes().to_vec();
        body.extend_from_slice(b"xyz");
        assert_eq!(ItemHead::parse(&body), Some((head, &b"xyz"[..])));
        assert_eq!(ItemHead::parse(&body[..ITEM_HEAD - 1]), None);
    }
}
