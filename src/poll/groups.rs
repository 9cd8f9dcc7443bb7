//! How XMIDs are grouped into polls (`pollers.group_size`): even groups of at most the
//! configured size, and which shrunken groups to merge again.

/// `xmids` in order, in as few groups of at most `max` as possible, of sizes that differ by at
/// most one (60 XMIDs by 50: 30 and 30, not 50 and 10 — the same requests, even pages).
pub fn even(xmids: &[String], max: usize) -> Vec<Vec<String>> {
    let max = max.max(1);
    let count = xmids.len().div_ceil(max);
    let mut out = Vec::with_capacity(count);
    let mut rest = xmids;
    for i in 0..count {
        // The first `len % count` groups take one more.
        let size = xmids.len() / count + usize::from(i < xmids.len() % count);
        let (group, after) = rest.split_at(size.min(rest.len()));
        out.push(group.to_vec());
        rest = after;
    }
    out
}

/// Which groups (by their sizes) to merge, each merge at most `max` XMIDs: first fit by
/// decreasing size, so a group is added to the first merge with room for it. Returns only the
/// merges of two groups or more, as indexes into `sizes`. Afterwards no two groups fit in one
/// together: a merge opened after another started with a group that did not fit there.
pub fn merges(sizes: &[usize], max: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Largest first; stable, so equal sizes keep their order.
    order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]));
    let mut bins: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in order {
        match bins.iter_mut().find(|(load, _)| load + sizes[i] <= max) {
            Some((load, members)) => {
                *load += sizes[i];
                members.push(i);
            }
            None => bins.push((sizes[i], vec![i])),
        }
    }
    bins.into_iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|(_, members)| members)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("X{i:05}")).collect()
    }

    #[test]
    fn even_groups_are_as_few_as_the_maximum_allows_and_differ_by_one_at_most() {
        let sizes = |n, max| even(&ids(n), max).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(0, 50), Vec::<usize>::new());
        assert_eq!(sizes(1, 50), [1]);
        assert_eq!(sizes(50, 50), [50]);
        assert_eq!(sizes(60, 50), [30, 30]);
        assert_eq!(sizes(230, 50), [46; 5]);
        assert_eq!(sizes(101, 50), [34, 34, 33]);
        assert_eq!(sizes(3, 1), [1, 1, 1]);
        assert_eq!(sizes(10_000, 50).len(), 200);
        // Every XMID once, in order.
        let all = ids(101);
        assert_eq!(even(&all, 50).concat(), all);
        // A zero maximum is taken as 1, not a division by zero.
        assert_eq!(sizes(2, 0), [1, 1]);
    }

    #[test]
    fn shrunken_groups_are_merged_until_no_two_fit_together() {
        // Five groups of 46 that lost most members: one group.
        assert_eq!(merges(&[9, 10, 9, 9, 9], 50), [vec![1, 0, 2, 3, 4]]);
        // Full or nearly full groups stay as they are.
        assert!(merges(&[50, 50, 49], 50).is_empty());
        assert!(merges(&[30, 30], 50).is_empty());
        // 30 + 20 fit; 25 + 25 fit; nothing else.
        let plan = merges(&[30, 25, 20, 25], 50);
        assert_eq!(plan, [vec![0, 2], vec![1, 3]]);
        for sizes in [
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 40, 45, 3, 1],
            vec![26; 7],
            vec![10, 41, 17, 33, 8, 8, 25, 49, 1],
        ] {
            let plan = merges(&sizes, 50);
            let mut loads: Vec<usize> = plan
                .iter()
                .map(|m| m.iter().map(|i| sizes[*i]).sum())
                .collect();
            let merged: Vec<usize> = plan.concat();
            loads.extend(
                (0..sizes.len())
                    .filter(|i| !merged.contains(i))
                    .map(|i| sizes[i]),
            );
            assert!(loads.iter().all(|l| *l <= 50), "{sizes:?}: {loads:?}");
            assert_eq!(loads.iter().sum::<usize>(), sizes.iter().sum::<usize>());
            for (i, a) in loads.iter().enumerate() {
                for b in &loads[i + 1..] {
                    assert!(a + b > 50, "{sizes:?}: {a} and {b} would fit together");
                }
            }
        }
    }
}
