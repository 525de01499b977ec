//! Client encodings: which ones psql and the server read byte for byte alike (every server
//! encoding), and which they do not (the client-only ones, where a quote or backslash byte can be
//! the second half of a character).

/// Client encodings psql and the server lex the same way byte for byte: every server encoding.
/// The client-only encodings (SJIS, BIG5, GBK, UHC, GB18030, JOHAB and their aliases) are not
/// here: in them a quote or backslash byte can be half of a character. Names as PostgreSQL
/// compares them (lower case, without `-`, `_` and spaces).
const SAFE_ENCODINGS: &str = "sqlascii utf8 unicode eucjp euccn euckr euctw eucjis2004 muleinternal \
    latin1 latin2 latin3 latin4 latin5 latin6 latin7 latin8 latin9 latin10 \
    iso88591 iso88592 iso88593 iso88594 iso88595 iso88596 iso88597 iso88598 iso88599 iso885910 \
    iso885913 iso885914 iso885915 iso885916 koi8 koi8r koi8u win866 win874 win1250 win1251 win1252 \
    win1253 win1254 win1255 win1256 win1257 win1258 windows866 windows874 windows1250 windows1251 \
    windows1252 windows1253 windows1254 windows1255 windows1256 windows1257 windows1258 \
    alt abc tcvn tcvn5712 vscii win";

/// `utf-8` → `utf8`, as PostgreSQL compares encoding names.
pub fn encoding_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether psql and pgvigil lex a stream in this client encoding alike.
pub fn safe_encoding(name: &str) -> bool {
    let key = encoding_key(name);
    SAFE_ENCODINGS.split_whitespace().any(|e| e == key)
}
