//! One scan of a whole dump from the scans of its parts, read apart (a parallel restore).

use super::ScanResult;

impl ScanResult {
    /// What scanning this part and then `later`, the part that follows it, found: rows, objects,
    /// roles and removed lines add up; the end (complete or not) is `later`'s; the first refusal
    /// stays. COPY spans keep the offsets of their own parts.
    pub fn then(mut self, later: ScanResult) -> ScanResult {
        for (t, rows) in later.tables {
            *self.tables.entry(t).or_insert(0) += rows;
        }
        self.complete = later.complete;
        self.dumped_from = self.dumped_from.or(later.dumped_from);
        self.dumped_by = self.dumped_by.or(later.dumped_by);
        self.bytes += later.bytes;
        self.open_copy = self.open_copy.or(later.open_copy);
        self.extensions.extend(later.extensions);
        self.transaction_lines += later.transaction_lines;
        self.forbidden = self.forbidden.or(later.forbidden);
        self.owners.extend(later.owners);
        for (t, g) in later.grants {
            self.grants.entry(t).or_default().extend(g);
        }
        self.privilege_lines_removed += later.privilege_lines_removed;
        self.subscription_lines_removed += later.subscription_lines_removed;
        self.roles.extend(later.roles);
        self.copies.extend(later.copies);
        self.toc.extend(later.toc);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::DumpScanner;

    #[test]
    fn a_dump_scanned_in_parts_adds_up_to_the_dump_scanned_whole() {
        let dump = "-- Dumped from database version 15.4\n-- Dumped by pg_dump version 15.4\n\
            CREATE TABLE public.t (a int);\nCOPY public.t (a) FROM stdin;\n1\n2\n\\.\n\n\
            COPY public.u (a) FROM stdin;\n3\n\\.\n\nCREATE INDEX i ON public.t (a);\n\
            --\n-- PostgreSQL database dump complete\n--\n\n";
        let scan = |text: &str| {
            let mut s = DumpScanner::new();
            s.feed(text.as_bytes());
            s.finish()
        };
        let whole = scan(dump);
        let cut = |needle: &str| dump.find(needle).unwrap();
        let (a, b) = (cut("COPY public.t"), cut("\nCREATE INDEX"));
        let parts = scan(&dump[..a]).then(scan(&dump[a..b])).then(scan(&dump[b..]));
        assert_eq!(parts.tables, whole.tables);
        assert_eq!((parts.complete, parts.bytes), (whole.complete, whole.bytes));
        assert_eq!((&parts.dumped_from, &parts.dumped_by), (&whole.dumped_from, &whole.dumped_by));
        assert_eq!(parts.copies.len(), whole.copies.len());
        // The end is the last part's.
        assert!(!whole.clone().then(scan(&dump[..a])).complete);
    }
}
