//! pgvigil's gzip members, one at a time, for `check --deep`, which inflates them on all cores:
//! each records its own length in its header ([`member_len`]), so it can be read whole; it is
//! inflated by zlib to exactly its recorded end, as `gunzip` reads it ([`inflate`]). Objects
//! written before members recorded their length are read in one stream instead.

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

/// Inflates one member with zlib (flate2's backend, the one-stream restore's): the deflate data
/// must end exactly where the footer begins, the footer ending the member where its recorded length
/// does, and the SQL must have the footer's CRC-32 and length. zlib refuses every code that gunzip
/// refuses (libdeflate, faster, accepts a few invalid ones: a crafted member could then read
/// differently here than in `gunzip` and the one-stream restore).
pub(super) fn inflate(member: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    inflate_into(member, &mut out)?;
    Ok(out)
}

/// [`inflate`] into `out` (its allocation reused).
fn inflate_into(member: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let damaged = || "a gzip member is damaged".to_string();
    out.clear();
    // (Only members whose header `member_len` accepted get here: no flags but the extra field.)
    let xlen = member.get(10..12).map(|x| usize::from(u16::from_le_bytes([x[0], x[1]])));
    let body = member
        .len()
        .checked_sub(8)
        .zip(xlen)
        .and_then(|(end, xlen)| member.get(12 + xlen..end));
    let (Some(body), Some(footer)) = (body, member.len().checked_sub(8).and_then(|at| member.get(at..))) else {
        return Err("a gzip member is too short (damaged)".into());
    };
    let crc = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    let isize = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as usize;
    if isize > MAX_MEMBER_SQL {
        return Err(format!("a gzip member claims {isize} bytes of SQL (damaged)"));
    }
    // One byte more than recorded: SQL longer than its footer says does not end the stream.
    out.reserve_exact(isize + 1);
    let mut zlib = flate2::Decompress::new(false);
    match zlib.decompress_vec(body, out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd) => {}
        Ok(_) | Err(_) => return Err(damaged()),
    }
    if zlib.total_in() != body.len() as u64 {
        return Err("a gzip member's recorded length does not match its data (damaged)".into());
    }
    if out.len() != isize || libdeflater::crc32(out) != crc {
        return Err("a gzip member's CRC-32 or length does not match its data (damaged)".into());
    }
    Ok(())
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

    /// The object's SQL read member by member as `check --deep` reads it; `Ok(None)`: its first
    /// member records no length (read in one stream instead).
    fn inflated(object: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut source: &[u8] = object;
        let (mut out, mut member, mut first) = (Vec::new(), Vec::new(), true);
        loop {
            match next_member(&mut source, first, &mut member) {
                Next::Member => out.extend_from_slice(&inflate(&member)?),
                Next::End => return Ok(Some(out)),
                Next::Damaged(why) => return Err(why),
                Next::Unsplittable => return Ok(None),
            }
            first = false;
        }
    }

    /// Bits of a deflate stream, least significant first; Huffman codes most significant first.
    #[derive(Default)]
    struct Bits(Vec<u8>, u32);

    impl Bits {
        fn push(&mut self, bit: bool) {
            if self.1.is_multiple_of(8) {
                self.0.push(0);
            }
            if bit {
                *self.0.last_mut().unwrap() |= 1 << (self.1 % 8);
            }
            self.1 += 1;
        }
        fn value(&mut self, v: u32, n: u32) {
            (0..n).for_each(|i| self.push(v >> i & 1 == 1));
        }
        fn code(&mut self, v: u32, n: u32) {
            (0..n).rev().for_each(|i| self.push(v >> i & 1 == 1));
        }
    }

    /// A member whose deflate data uses length symbol 286, which the format reserves: zlib (and
    /// gunzip) refuse it, libdeflate reads it as a length of 258. Its footer is libdeflate's output.
    fn reserved_symbol_member() -> (Vec<u8>, Vec<u8>) {
        let mut bits = Bits::default();
        bits.value(1, 1); // the last block
        bits.value(1, 2); // fixed Huffman codes
        bits.code(0x30 + u32::from(b'A'), 8); // the literal A
        bits.code(0xc0 + 6, 8); // symbol 286
        bits.code(0, 5); // distance 1
        bits.code(0, 7); // end of block
        let lenient = vec![b'A'; 259];
        let mut member = compress_block(b"x", 6).unwrap()[..MEMBER_HEADER].to_vec();
        member.extend_from_slice(&bits.0);
        member.extend_from_slice(&libdeflater::crc32(&lenient).to_le_bytes());
        member.extend_from_slice(&(lenient.len() as u32).to_le_bytes());
        let total = member.len() as u32;
        member[16..20].copy_from_slice(&total.to_le_bytes());
        (member, lenient)
    }

    #[test]
    fn a_member_with_codes_gunzip_refuses_is_damage_even_where_libdeflate_reads_it() {
        let (member, lenient) = reserved_symbol_member();
        let mut out = vec![0u8; lenient.len()];
        let read = libdeflater::Decompressor::new().gzip_decompress(&member, &mut out);
        assert_eq!(read.ok(), Some(lenient.len()), "libdeflate reads the reserved symbol");
        assert!(inflate(&member).is_err());
        let mut gunzip = Vec::new();
        assert!(flate2::read::MultiGzDecoder::new(&member[..]).read_to_end(&mut gunzip).is_err());
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
        let cases: [Case; 7] = [
            ("pgvigil's members", &ours, Some(&sql)),
            ("a filler member at the end", &with_filler, Some(&sql)),
            ("nothing", b"", None),
            ("truncated", &truncated, None),
            ("a byte changed", &flipped, None),
            ("garbage after the last member", &trailing, None),
            ("a member hiding another inside its recorded length", &hiding, None),
        ];
        for (what, object, want) in cases {
            match (inflated(object), want) {
                (Ok(Some(got)), Some(want)) => assert!(got == want, "{what}: other SQL"),
                (Err(_), None) => {}
                (got, _) => panic!("{what}: {:?}", got.map(|g| g.map(|g| g.len()))),
            }
        }
        // Members without their length are left to the one stream.
        assert_eq!(inflated(&zlib_gzip(&sql)), Ok(None));
    }
}
