//! Lookups by name in lists whose length the capture decides (one entry per
//! input or output), so a lookup per entry must not cost a scan per entry.

use std::collections::HashMap;

/// Lists up to this long are scanned: the usual handful of tensors, where
/// building a hash map would cost more than it saves.
pub const LINEAR_MAX: usize = 16;

/// Finds items of a slice by name, the first match winning as with
/// `iter().find`; past [`LINEAR_MAX`] items a hash index is built once.
pub struct ByName<'a, T> {
    items: &'a [T],
    name: fn(&T) -> &str,
    index: Option<HashMap<&'a str, usize>>,
}

impl<'a, T> ByName<'a, T> {
    pub fn new(items: &'a [T], name: fn(&T) -> &str) -> Self {
        let index = (items.len() > LINEAR_MAX).then(|| {
            let mut m = HashMap::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                m.entry(name(it)).or_insert(i);
            }
            m
        });
        ByName { items, name, index }
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(m) => m.get(name).copied(),
            None => self.items.iter().position(|it| (self.name)(it) == name),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a T> {
        self.position(name).map(|i| &self.items[i])
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<String> {
        spec.split(',').map(str::to_string).collect()
    }

    #[test]
    fn finds_what_a_scan_finds_short_and_long() {
        let mut lists = vec![names(""), names("a"), names("a,b,a,,c,"), names(",x,,x")];
        // Long lists with duplicates and empty names, around the threshold.
        for n in [LINEAR_MAX, LINEAR_MAX + 1, 40, 5000] {
            lists.push((0..n).map(|i| format!("k{}", i % 7 + i / 3)).collect());
            lists.push(
                (0..n)
                    .map(|i| {
                        if i % 5 == 0 {
                            String::new()
                        } else {
                            i.to_string()
                        }
                    })
                    .collect(),
            );
        }
        for list in &lists {
            let by = ByName::new(list, String::as_str);
            let mut probes: Vec<String> = list.clone();
            probes.extend(names("missing,,k0,k1,3"));
            for p in &probes {
                let want = list.iter().position(|s| s == p);
                assert_eq!(by.position(p), want, "{p:?} in a list of {}", list.len());
                assert_eq!(by.contains(p), want.is_some());
                assert_eq!(
                    by.get(p).map(|s| s as *const String),
                    want.map(|i| &list[i] as *const String)
                );
            }
        }
    }
}
