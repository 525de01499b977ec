//! pgvigil's gzip members, one at a time: each records its own length in its header
//! ([`member_len`]), so it can be read whole and inflated with libdeflate, which checks its CRC-32
//! and length, at about twice zlib's speed. `check --deep` inflates members on all cores; a part of
//! a parallel restore inflates its members in turn ([`Inflating`]). Objects written before members
//! recorded their length are inflated by zlib, as stock `gunzip` would.

use crate::pipeline::stages::compress::{member_len, BLOCK_SIZE, MEMBER_HEADER};
use std::io::Read;

/// Largest SQL a member may claim (members hold [`BLOCK_SIZE`] bytes; more means damage).
const MAX_MEMBER_SQL: usize = 4 * BLOCK_SIZE;

/// What reading the next member of a stream found.
pub(super) enum Next {
    /// A whole member, header to footer, is in the buffer.
    Member,
    /// The stream ended after a member.
    End,
    /// The members stop being readable here, for this reason.
    Damaged(String),
    /// The first member does not record its length (written before members did): the buffer
    /// holds the bytes read of it so far.
    Unsplittable,
}

/// Reads the next member of `source` into `member` by the length it records; `first`: none was
/// read before.
pub(super) fn next_member(source: &mut dyn Read, first: bool, member: &mut Vec<u8>) -> Next {
    let damaged = |why: &str| Next::Damaged(why.to_string());
    member.clear();
    member.resize(MEMBER_HEADER, 0);
    match read_full(source, member) {
        Ok(0) if !first => return Next::End,
        Ok(0) => return damaged("the object holds no gzip member"),
        Ok(n) if n < MEMBER_HEADER && first => {
            member.truncate(n);
            return Next::Unsplittable;
        }
        Ok(n) if n < MEMBER_HEADER => return damaged("the gzip stream ends inside a member header (truncated)"),
        Ok(_) => {}
        Err(e) => return damaged(&e.to_string()),
    }
    let Some(len) = member_len(member).filter(|l| *l >= MEMBER_HEADER + 8 && *l <= MAX_MEMBER_SQL + (1 << 20)) else {
        return if first {
            Next::Unsplittable
        } else {
            damaged("a gzip member does not record its length (damaged, or not written by pgvigil)")
        };
    };
    member.resize(len, 0);
    match read_full(source, &mut member[MEMBER_HEADER..]) {
        Ok(n) if n == len - MEMBER_HEADER => Next::Member,
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

/// libdeflate's decompressor, called through `libdeflate_gzip_decompress_ex`: unlike the
/// `gzip_decompress` of the `libdeflater` wrapper, it says how many bytes of the input the member
/// took, so that a member whose recorded length hides bytes after its footer (and a copy of the
/// footer at the end) is refused instead of skipping what gunzip would read.
struct Exact(std::ptr::NonNull<libdeflate_sys::libdeflate_decompressor>);

#[allow(unsafe_code)]
impl Exact {
    fn new() -> Option<Self> {
        // SAFETY: allocating a decompressor has no preconditions; NULL (out of memory) is handled.
        std::ptr::NonNull::new(unsafe { libdeflate_sys::libdeflate_alloc_decompressor() }).map(Exact)
    }

    /// Inflates the gzip member at the start of `member` into `out`: (bytes of input taken, bytes
    /// written), or `None` when it is not a whole, valid member that fits.
    fn gzip(&mut self, member: &[u8], out: &mut [u8]) -> Option<(usize, usize)> {
        let (mut taken, mut written) = (0usize, 0usize);
        // SAFETY: the decompressor is valid (owned, freed only on drop, used by one thread: it is
        // thread-local); the input and output pointers come from live slices whose lengths are
        // passed with them; libdeflate writes at most `out.len()` bytes and the two counts.
        let result = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                member.as_ptr().cast(),
                member.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut taken,
                &mut written,
            )
        };
        (result == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS).then_some((taken, written))
    }
}

#[allow(unsafe_code)]
impl Drop for Exact {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor`, freed once, here.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

thread_local! {
    /// One decompressor per inflating thread.
    static INFLATE: std::cell::RefCell<Option<Exact>> = std::cell::RefCell::new(Exact::new());
}

/// Inflates one member. libdeflate checks the CRC-32 and length that follow the deflate data, and
/// that footer must end the member exactly where its recorded length does: gunzip would otherwise
/// read what follows it as more members.
pub(super) fn inflate(member: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    inflate_into(member, &mut out)?;
    Ok(out)
}

/// [`inflate`] into `out` (its allocation reused).
fn inflate_into(member: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let footer = member
        .len()
        .checked_sub(8)
        .and_then(|at| member.get(at..))
        .ok_or("a gzip member is too short (damaged)")?;
    let isize = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as usize;
    if isize > MAX_MEMBER_SQL {
        return Err(format!("a gzip member claims {isize} bytes of SQL (damaged)"));
    }
    out.clear();
    out.resize(isize, 0);
    let inflated = INFLATE.with(|d| d.borrow_mut().as_mut().map(|d| d.gzip(member, out)));
    match inflated {
        None => Err("no memory for a decompressor".into()),
        Some(Some((taken, written))) if taken == member.len() && written == isize => Ok(()),
        Some(Some(_)) => Err("a gzip member's recorded length does not match its data (damaged)".into()),
        Some(None) => Err("a gzip member is damaged".into()),
    }
}

/// The SQL of a stream of gzip members, as a reader: member by member with libdeflate while
/// members record their length, or through zlib from the start when the first one does not. An
/// error is the gzip layer's (damage).
pub(super) struct Inflating<'a> {
    state: State<'a>,
    /// The member being read, and its SQL (both reused).
    member: Vec<u8>,
    sql: Vec<u8>,
    /// How much of `sql` was given out.
    at: usize,
}

/// zlib over what was read of the first member, then the rest.
type Zlib<'a> = flate2::read::MultiGzDecoder<std::io::Chain<std::io::Cursor<Vec<u8>>, &'a mut dyn Read>>;

enum State<'a> {
    /// Reading members from the source; whether one was read yet.
    Members(&'a mut dyn Read, bool),
    /// An object written before members recorded their length.
    Zlib(Box<Zlib<'a>>),
    Ended,
}

impl<'a> Inflating<'a> {
    pub(super) fn new(source: &'a mut dyn Read) -> Self {
        Self {
            state: State::Members(source, false),
            member: Vec::new(),
            sql: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Inflating<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.at < self.sql.len() {
                let n = buf.len().min(self.sql.len() - self.at);
                buf[..n].copy_from_slice(&self.sql[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            let next = match &mut self.state {
                State::Zlib(gz) => return gz.read(buf),
                State::Ended => return Ok(0),
                State::Members(source, read_one) => {
                    let next = next_member(&mut **source, !*read_one, &mut self.member);
                    *read_one = true;
                    next
                }
            };
            match next {
                Next::Member => {
                    inflate_into(&self.member, &mut self.sql).map_err(std::io::Error::other)?;
                    self.at = 0;
                }
                Next::End => self.state = State::Ended,
                Next::Damaged(why) => {
                    self.state = State::Ended;
                    return Err(std::io::Error::other(why));
                }
                Next::Unsplittable => {
                    if let State::Members(source, _) = std::mem::replace(&mut self.state, State::Ended) {
                        let head = std::mem::take(&mut self.member);
                        let chained = std::io::Cursor::new(head).chain(source);
                        self.state = State::Zlib(Box::new(flate2::read::MultiGzDecoder::new(chained)));
                    }
                }
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
        // A member whose recorded length takes in a whole second member and a copy of its own
        // footer: gunzip would read the second member too.
        let first = compress_block(b"SELECT 1;\n", 6).unwrap();
        let hidden_member = compress_block(b"DROP TABLE important;\n", 6).unwrap();
        let footer = first[first.len() - 8..].to_vec();
        let mut hiding = first.clone();
        hiding.extend_from_slice(&hidden_member);
        hiding.extend_from_slice(&footer);
        let total = hiding.len() as u32;
        hiding[16..20].copy_from_slice(&total.to_le_bytes());
        assert!(member_len(&hiding) == Some(hiding.len()));
        let zlib = zlib_gzip(&sql);
        let cases: [Case; 8] = [
            ("pgvigil's members", &ours, Some(&sql)),
            ("a filler member at the end", &with_filler, Some(&sql)),
            ("members without lengths (zlib)", &zlib, Some(&sql)),
            ("nothing", b"", None),
            ("truncated", &truncated, None),
            ("a byte changed", &flipped, None),
            ("garbage after the last member", &trailing, None),
            ("a member hiding another inside its recorded length", &hiding, None),
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
