//! The filter against hostile statements: names written so that the parser reads the family's
//! table where a plain reading would not, and strings the restaging cannot read.

use super::*;

#[test]
fn names_hidden_by_comments_are_restaged_and_unicode_escapes_refused() {
    let dump = "CREATE TABLE public.t (id integer);\n\
                GRANT SELECT ON TABLE public/**/.t TO evil;\n\
                SECURITY LABEL FOR dummy ON TABLE public -- a comment\n.t IS 'x';\n";
    let mut f = Filter::new(Family::new(Name::new("public", "t"), false), "st");
    let mut out = Vec::new();
    f.feed(dump.as_bytes(), &mut out);
    f.finish(&mut out);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(f.error, None);
    assert!(
        out.contains("ON TABLE st/**/.t TO evil;") && out.contains("ON TABLE st -- a comment\n.t IS"),
        "{out}"
    );
    assert!(!out.contains("public"), "{out}");
    // A name with the database in front is never taken as the family's.
    let mut f = Filter::new(Family::new(Name::new("public", "t"), false), "st");
    let mut out = Vec::new();
    f.feed(
        b"CREATE TABLE public.t (id integer);\nGRANT ALL ON TABLE app.public.t TO evil;\nALTER TABLE app.public.t OWNER TO evil;\n",
        &mut out,
    );
    f.finish(&mut out);
    assert_eq!(f.error, None);
    assert!(!String::from_utf8(out).unwrap().contains("evil"));
    // Upper-case non-ASCII letters do not fold; long names are cut to 63 bytes, as PostgreSQL does.
    let long = "x".repeat(63);
    for (table, statement) in [
        ("Ä", "GRANT SELECT ON TABLE public.Ä TO reader;\n".to_string()),
        (long.as_str(), format!("GRANT SELECT ON TABLE public.{long}yz TO reader;\n")),
    ] {
        let mut f = Filter::new(Family::new(Name::new("public", table), false), "st");
        let mut out = Vec::new();
        f.feed(
            format!("CREATE TABLE public.\"{table}\" (id integer);\n{statement}").as_bytes(),
            &mut out,
        );
        f.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("GRANT SELECT ON TABLE st.") && !out.contains("public."), "{out}");
    }
    for hostile in [
        "GRANT ALL ON TABLE U&\"public\".t TO evil;\n",
        "ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval(U&'public.s'::regclass);\n",
        "ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval(E'public.s'::regclass);\n",
        "COMMENT ON TABLE public.t IS $$x$$;\n",
    ] {
        let mut f = Filter::new(Family::new(Name::new("public", "t"), false), "st");
        let mut out = Vec::new();
        f.feed(format!("CREATE TABLE public.t (id integer);\n{hostile}").as_bytes(), &mut out);
        f.finish(&mut out);
        assert!(
            f.error.as_deref().is_some_and(|e| e.contains("Unicode escapes")),
            "{hostile}: {:?}",
            f.error
        );
    }
}
