//! `f` over a slice on a few scoped threads, results in the slice's order:
//! what the batch writer, the plan, the status check, a repair's sweep and
//! the manifest's pieces share.

/// `f` over `items` on up to `threads` scoped threads, results in order. A
/// thread that panicked gives an error for each of its items, so no item is
/// ever left without a result.
pub(crate) fn map<T: Sync, O: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<O, String> + Sync,
) -> Vec<Result<O, String>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                (
                    part.len(),
                    scope.spawn(move || part.iter().map(f).collect::<Vec<_>>()),
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| Err("internal error: a worker thread panicked".to_string()))
                        .collect()
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results come back in order whichever thread made them; a part
    /// whose thread panicked gives an error for each of its items and none
    /// other.
    #[test]
    fn map_keeps_the_order_and_an_error_for_each_item_of_a_panicked_part() {
        let items: Vec<usize> = (0..10).collect();
        for threads in [1, 2, 3, 16] {
            let doubled = map(&items, threads, |&i| Ok(i * 2));
            let doubled: Vec<usize> = doubled.into_iter().map(Result::unwrap).collect();
            assert_eq!(doubled, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        }
        // Two parts of five, each on a thread of its own.
        for panics_at in [2, 7] {
            let out = map(&items, 2, |&i| {
                assert_ne!(i, panics_at, "a planned panic");
                Ok(i)
            });
            assert_eq!(out.len(), 10);
            for (i, r) in out.iter().enumerate() {
                if (i < 5) == (panics_at < 5) {
                    assert!(r.as_ref().unwrap_err().contains("panicked"), "{i}: {r:?}");
                } else {
                    assert_eq!(r.as_ref().ok(), Some(&i));
                }
            }
        }
    }
}
