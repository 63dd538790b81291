//! The queue between the planner and the transfers: big objects first.
//!
//! The planner finds objects in key order, but a stanza's copy ends when its biggest object
//! does: a 1 GiB file listed after 600 small ones would otherwise start only once they have
//! gone, and alone set the run's length. Objects big enough to be read in parallel ranges
//! therefore jump the queue. Order within each class is the planner's. Publishing does not
//! depend on this order: nothing is published until every payload transfer has finished.

use tokio::sync::mpsc;

use super::plan::Copy;
use super::transfer::PARALLEL_READ_THRESHOLD;

/// Big copies waiting at once before the planner waits for the transfers. Few repositories have
/// this many files of 64 MiB or more; the planner simply waits when there are more.
const BIG_AHEAD: usize = 1024;

/// The planner's end.
pub(super) struct CopySender {
    big: mpsc::Sender<Copy>,
    rest: mpsc::Sender<Copy>,
}

/// The transfers' end.
pub(super) struct CopyReceiver {
    big: mpsc::Receiver<Copy>,
    rest: mpsc::Receiver<Copy>,
}

/// A queue holding up to `ahead` ordinary copies (plus up to [`BIG_AHEAD`] big ones).
pub(super) fn copy_queue(ahead: usize) -> (CopySender, CopyReceiver) {
    with_room(BIG_AHEAD, ahead)
}

/// A finished queue that holds `copies` (for a list known in full, e.g. the backup history).
pub(super) fn queue_of(copies: &[Copy]) -> CopyReceiver {
    let (tx, rx) = with_room(copies.len(), copies.len());
    for c in copies {
        let lane = tx.lane(c);
        lane.try_send(c.clone())
            .expect("each lane has room for every copy");
    }
    rx
}

fn with_room(big: usize, rest: usize) -> (CopySender, CopyReceiver) {
    let (big_tx, big_rx) = mpsc::channel(big.max(1));
    let (rest_tx, rest_rx) = mpsc::channel(rest.max(1));
    (
        CopySender {
            big: big_tx,
            rest: rest_tx,
        },
        CopyReceiver {
            big: big_rx,
            rest: rest_rx,
        },
    )
}

/// The receiver is gone: the transfers stopped.
#[derive(Debug)]
pub(super) struct Closed;

impl CopySender {
    pub(super) async fn send(&self, copy: Copy) -> Result<(), Closed> {
        self.lane(&copy).send(copy).await.map_err(|_| Closed)
    }

    fn lane(&self, copy: &Copy) -> &mpsc::Sender<Copy> {
        if copy.size >= PARALLEL_READ_THRESHOLD {
            &self.big
        } else {
            &self.rest
        }
    }
}

impl CopyReceiver {
    /// The next copy, a big one if any is waiting; `None` once the planner is done and both
    /// lanes are empty.
    pub(super) async fn recv(&mut self) -> Option<Copy> {
        // A lane that is closed and empty drops out of the select; `else` once both have.
        tokio::select! {
            biased;
            Some(c) = self.big.recv() => Some(c),
            Some(c) = self.rest.recv() => Some(c),
            else => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectKey;
    use crate::sync::plan::{Check, Reason};

    fn copy(name: &str, size: u64) -> Copy {
        Copy {
            key: ObjectKey::new(name).unwrap(),
            size,
            check: Check::SizeOnly,
            reason: Reason::Missing,
        }
    }

    async fn drain(mut rx: CopyReceiver) -> Vec<String> {
        let mut order = Vec::new();
        while let Some(c) = rx.recv().await {
            order.push(c.key.to_string());
        }
        order
    }

    #[tokio::test]
    async fn big_objects_jump_the_queue_and_each_class_keeps_the_planners_order() {
        let (tx, rx) = copy_queue(16);
        let big = PARALLEL_READ_THRESHOLD;
        for (name, size) in [
            ("a", 10),
            ("b", 20),
            ("huge-1", big * 16),
            ("c", big - 1),
            ("huge-2", big),
        ] {
            tx.send(copy(name, size)).await.unwrap();
        }
        drop(tx);
        assert_eq!(drain(rx).await, ["huge-1", "huge-2", "a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_big_object_sent_later_still_goes_before_waiting_small_ones() {
        let (tx, mut rx) = copy_queue(16);
        tx.send(copy("a", 1)).await.unwrap();
        tx.send(copy("b", 1)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().key.to_string(), "a");
        tx.send(copy("huge", PARALLEL_READ_THRESHOLD * 2))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(drain(rx).await, ["huge", "b"]);
    }

    #[tokio::test]
    async fn a_queue_of_a_known_list_holds_all_of_it_big_ones_first() {
        let big = PARALLEL_READ_THRESHOLD;
        let list: Vec<Copy> = (0..3000)
            .map(|i| copy(&format!("f{i:04}"), if i % 1000 == 999 { big } else { 1 }))
            .collect();
        let order = drain(queue_of(&list)).await;
        assert_eq!(order.len(), 3000);
        assert_eq!(order[..3], ["f0999", "f1999", "f2999"]);
        assert_eq!(order[3..5], ["f0000", "f0001"]);
    }

    #[tokio::test]
    async fn sending_fails_once_the_transfers_have_stopped() {
        let (tx, rx) = copy_queue(4);
        drop(rx);
        assert!(tx.send(copy("a", 1)).await.is_err());
        assert!(
            tx.send(copy("huge", PARALLEL_READ_THRESHOLD))
                .await
                .is_err()
        );
    }
}
