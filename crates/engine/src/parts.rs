//! Work over many agents, spread across the machine's cores when there are
//! enough agents for each thread to earn its start.

/// `f` over `items` cut into consecutive parts, one thread per part when
/// there are at least `per_thread` items for each (no more threads than
/// cores), else on this thread: the parts' results, in order. A panic in a
/// part is resumed here.
pub fn in_parts<T: Sync, R: Send>(items: &[T], per_thread: usize, f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len() / per_thread.max(1)).max(1);
    if threads == 1 {
        return vec![f(items)];
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items.chunks(chunk).map(|part| scope.spawn(move || f(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_item_once_in_order_on_as_many_threads_as_they_earn() {
        let items: Vec<usize> = (0..1000).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = in_parts(&items, 100, |part| (std::thread::current().id(), part.to_vec()));
        assert_eq!(parts.len(), cores.min(10));
        assert_eq!(parts.iter().flat_map(|(_, p)| p.clone()).collect::<Vec<_>>(), items);
        let threads: std::collections::BTreeSet<_> = parts.iter().map(|(t, _)| format!("{t:?}")).collect();
        assert_eq!(threads.len(), parts.len(), "each part on a thread of its own");
        // Too few items for a second thread: one part, on this thread.
        let one = in_parts(&items[..150], 100, |part| (std::thread::current().id(), part.len()));
        assert_eq!(one, [(std::thread::current().id(), 150)]);
        assert_eq!(in_parts(&[] as &[usize], 0, <[usize]>::len), [0]);
    }
}
