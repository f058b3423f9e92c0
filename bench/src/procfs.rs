//! Process groups as `/proc` shows them: shared by the Dask CLI cluster
//! (`compare::dask`) and its test (`bench/tests/dask_cli.rs`, which
//! includes this file by path: the bench crate has no library target).

/// The live (not zombie) processes in process group `pgid` now.
pub fn group_members(pgid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid pgrp …: comm may hold spaces, so after the last ')'.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut fields = rest.split_whitespace();
            // A zombie is dead (it waits for its parent, or init, to reap it).
            let state = fields.next();
            state != Some("Z") && fields.nth(1).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .count()
}
