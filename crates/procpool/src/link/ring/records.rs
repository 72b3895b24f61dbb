//! The records a reply ring holds, outside the ring: a packed chunk's
//! compact input result ([`ItemHead`], the head of a [`Record::Item`]) and
//! runs of records as a worker's keeper forwards them over a network link
//! (`ToParent::Records`: [`put_record`], read back by [`records`]).

use super::{ITEM, ITEM_HEAD, LEN, MARKER, Record};

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
/// least its head). The ring's reader and [`records`] read records alike.
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

/// Appends a record (as the ring holds it: length word, then `body`) to
/// `out`: a keeper process forwards its worker's ring this way (see
/// `ToParent::Records`).
#[cfg(feature = "remote")]
pub(crate) fn put_record(out: &mut Vec<u8>, record: Record, body: &[u8]) {
    let flag = if record == Record::Item { ITEM } else { 0 };
    out.extend_from_slice(&(flag | body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// The records of a `ToParent::Records` payload, each with its body; `Err`
/// if the bytes are no such records (a marker, a length past the end or
/// over `max_frame`, an item record shorter than its head).
pub(crate) fn records(
    mut bytes: &[u8],
    max_frame: u32,
) -> impl Iterator<Item = Result<(Record, &[u8]), String>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let Some((len, rest)) = bytes.split_first_chunk::<LEN>() else {
            bytes = &[];
            return Some(Err("forwarded records: a cut length".to_owned()));
        };
        let (record, len) =
            match length_word(u32::from_le_bytes(*len), max_frame, rest.len() as u64) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    bytes = &[];
                    return Some(Err("forwarded records: a marker".to_owned()));
                }
                Err(e) => {
                    bytes = &[];
                    return Some(Err(format!("forwarded records: {e}")));
                }
            };
        let (body, rest) = rest.split_at(len as usize);
        bytes = rest;
        Some(Ok((record, body)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "remote")]
    fn forwarded_records_read_back_as_put() {
        let head = ItemHead {
            id: 3,
            index: 1,
            queue_ns: 0,
            decode_ns: 0,
            run_ns: 0,
            encode_ns: 0,
        };
        let mut item = head.to_bytes().to_vec();
        item.push(42);
        let mut out = Vec::new();
        put_record(&mut out, Record::Frame, b"note");
        put_record(&mut out, Record::Item, &item);
        let got: Vec<_> = records(&out, 1 << 20).collect();
        assert_eq!(
            got,
            vec![
                Ok((Record::Frame, &b"note"[..])),
                Ok((Record::Item, &item[..]))
            ]
        );
        // Cut, lying, a marker, a short item: an error, then nothing.
        for bad in [
            &out[..out.len() - 1],
            &[9, 0, 0, 0, 1][..],
            &MARKER.to_le_bytes()[..],
            &(ITEM | 2)
                .to_le_bytes()
                .iter()
                .chain(b"ab")
                .copied()
                .collect::<Vec<u8>>()[..],
        ] {
            let got: Vec<_> = records(bad, 1 << 20).collect();
            assert!(got.last().is_some_and(Result::is_err), "{bad:?}: {got:?}");
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
