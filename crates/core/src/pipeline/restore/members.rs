//! pgvigil's gzip members, one at a time: each records its own length in its header
//! ([`member_len`]), so it can be read whole and inflated with libdeflate, which checks its CRC-32
//! and length, at about twice zlib's speed. `check --deep` inflates members on all cores; a part of
//! a parallel restore inflates its members in turn ([`Inflating`]). Objects written before members
//! recorded their length are inflated by zlib, as stock `gunzip` would.

use crate::pipeline::stages::compress::{member_len, BLOCK_SIZE, MEMBER_HEADER};
use std::io::Read;

/// Largest SQL a member may claim (members hold [`BLOCK_SIZE`] bytes; more means damage).
const MAX_MEMBER_SQL: usize = 4 * BLOCK_SIZE;

/// The next member of a stream.
pub(super) enum Next {
    /// A whole member, header to footer.
    Member(Vec<u8>),
    /// The stream ended after a member.
    End,
    /// The members stop being readable here, for this reason.
    Damaged(String),
    /// The first member does not record its length (written before members did): the bytes read
    /// of it so far.
    Unsplittable(Vec<u8>),
}

/// Reads the next member of `source` by the length it records; `first`: none was read before.
pub(super) fn next_member(source: &mut dyn Read, first: bool) -> Next {
    let damaged = |why: &str| Next::Damaged(why.to_string());
    let mut member = vec![0u8; MEMBER_HEADER];
    match read_full(source, &mut member) {
        Ok(0) if !first => return Next::End,
        Ok(0) => return damaged("the object holds no gzip member"),
        Ok(n) if n < MEMBER_HEADER && first => {
            member.truncate(n);
            return Next::Unsplittable(member);
        }
        Ok(n) if n < MEMBER_HEADER => return damaged("the gzip stream ends inside a member header (truncated)"),
        Ok(_) => {}
        Err(e) => return damaged(&e.to_string()),
    }
    let Some(len) = member_len(&member).filter(|l| *l >= MEMBER_HEADER + 8 && *l <= MAX_MEMBER_SQL + (1 << 20)) else {
        return if first {
            Next::Unsplittable(member)
        } else {
            damaged("a gzip member does not record its length (damaged, or not written by pgvigil)")
        };
    };
    member.resize(len, 0);
    match read_full(source, &mut member[MEMBER_HEADER..]) {
        Ok(n) if n == len - MEMBER_HEADER => Next::Member(member),
        Ok(_) => damaged("the gzip stream ends inside a member (truncated)"),
        Err(e) => damaged(&e.to_string()),
    }
}

pub(super) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

thread_local! {
    /// One decompressor per inflating thread.
    static INFLATE: std::cell::RefCell<libdeflater::Decompressor> = std::cell::RefCell::new(libdeflater::Decompressor::new());
}

/// Inflates one member. libdeflate checks the CRC-32 and length that follow the deflate data;
/// the footer at the end of the slice must be that same one (a recorded length that swallowed
/// the next member would otherwise hide it).
pub(super) fn inflate(member: &[u8]) -> Result<Vec<u8>, String> {
    let footer = member
        .len()
        .checked_sub(8)
        .and_then(|at| member.get(at..))
        .ok_or("a gzip member is too short (damaged)")?;
    let crc = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    let isize = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as usize;
    if isize > MAX_MEMBER_SQL {
        return Err(format!("a gzip member claims {isize} bytes of SQL (damaged)"));
    }
    let mut out = vec![0u8; isize];
    let inflated = INFLATE.with(|d| d.borrow_mut().gzip_decompress(member, &mut out));
    match inflated {
        Ok(n) if n == isize && libdeflater::crc32(&out) == crc => Ok(out),
        Ok(_) => Err("a gzip member's recorded length does not match its data (damaged)".into()),
        Err(e) => Err(format!("a gzip member is damaged: {e}")),
    }
}

/// The SQL of a stream of gzip members, as a reader: member by member with libdeflate while
/// members record their length, or through zlib from the start when the first one does not. An
/// error is the gzip layer's (damage).
pub(super) struct Inflating<'a> {
    state: State<'a>,
}

/// zlib over what was read of the first member, then the rest.
type Zlib<'a> = flate2::read::MultiGzDecoder<std::io::Chain<std::io::Cursor<Vec<u8>>, &'a mut dyn Read>>;

enum State<'a> {
    /// Reading members: the source, the SQL of the last one and how much of it was given out,
    /// and whether one was read yet.
    Members(&'a mut dyn Read, Vec<u8>, usize, bool),
    /// An object written before members recorded their length.
    Zlib(Box<Zlib<'a>>),
    Ended,
}

impl<'a> Inflating<'a> {
    pub(super) fn new(source: &'a mut dyn Read) -> Self {
        Self {
            state: State::Members(source, Vec::new(), 0, false),
        }
    }
}

impl Read for Inflating<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let next = match &mut self.state {
                State::Zlib(gz) => return gz.read(buf),
                State::Ended => return Ok(0),
                State::Members(_, sql, at, _) if *at < sql.len() => {
                    let n = buf.len().min(sql.len() - *at);
                    buf[..n].copy_from_slice(&sql[*at..*at + n]);
                    *at += n;
                    return Ok(n);
                }
                State::Members(source, _, _, read_one) => next_member(&mut **source, !*read_one),
            };
            match (next, std::mem::replace(&mut self.state, State::Ended)) {
                (Next::Member(member), State::Members(source, _, _, _)) => {
                    let sql = inflate(&member).map_err(std::io::Error::other)?;
                    self.state = State::Members(source, sql, 0, true);
                }
                (Next::Unsplittable(head), State::Members(source, ..)) => {
                    let chained = std::io::Cursor::new(head).chain(source);
                    self.state = State::Zlib(Box::new(flate2::read::MultiGzDecoder::new(chained)));
                }
                (Next::Damaged(why), _) => return Err(std::io::Error::other(why)),
                (Next::End, _) | (_, _) => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::compress::{compress_block, filler};
    use std::io::Write;

    /// What, the object, and the SQL it must give (`None`: an error).
    type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

    fn zlib_gzip(sql: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(sql).unwrap();
        gz.finish().unwrap()
    }

    fn inflated(object: &[u8]) -> Result<Vec<u8>, String> {
        let mut source: &[u8] = object;
        let mut out = Vec::new();
        Inflating::new(&mut source).read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn members_inflate_as_gunzip_reads_them_and_damage_is_an_error() {
        let sql: Vec<u8> = (0..300_000u32).flat_map(|i| format!("{i}\trow {i}\n").into_bytes()).collect();
        let ours: Vec<u8> = sql.chunks(BLOCK_SIZE).flat_map(|b| compress_block(b, 6).unwrap()).collect();
        let mut with_filler = ours.clone();
        with_filler.extend_from_slice(&filler(100));
        let mut truncated = ours.clone();
        truncated.truncate(ours.len() - 3);
        let mut flipped = ours.clone();
        let mid = ours.len() / 2;
        flipped[mid] ^= 0x5a;
        let mut trailing = ours.clone();
        trailing.extend_from_slice(b"not gzip at all, and long enough for a header");
        let zlib = zlib_gzip(&sql);
        let cases: [Case; 7] = [
            ("pgvigil's members", &ours, Some(&sql)),
            ("a filler member at the end", &with_filler, Some(&sql)),
            ("members without lengths (zlib)", &zlib, Some(&sql)),
            ("nothing", b"", None),
            ("truncated", &truncated, None),
            ("a byte changed", &flipped, None),
            ("garbage after the last member", &trailing, None),
        ];
        for (what, object, want) in cases {
            match (inflated(object), want) {
                (Ok(got), Some(want)) => assert!(got == want, "{what}: other SQL"),
                (Err(_), None) => {}
                (got, _) => panic!("{what}: {:?}", got.map(|g| g.len())),
            }
        }
    }
}
