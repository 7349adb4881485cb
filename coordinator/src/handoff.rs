//! The release side of a hand-off (see `crate::waiters`): a release of a
//! resource whose first waiter here accepts a ride carries that waiter's
//! proposals, one per region, in the agents' `HandOff` call (release, then
//! grant). Each region's release part goes to the release's tally; each grant
//! part goes back to the waiter, whose state machine counts it as the answer
//! to its own proposal. A region the waiter gave no proposal for is sent a
//! plain release.

use std::time::Duration;

use futures::FutureExt;
use globallock_proto::agent::hand_off_response::{GrantResult, ReleaseResult};
use globallock_proto::agent::{
    GrantResponse, HandOffRequest, HandOffResponse, LockRef, RemoveResponse,
};
use tokio::sync::oneshot;
use tonic::Status;
use tracing::debug;

use crate::engine::{LockEngine, Replies};
use crate::waiters::Ride;

/// How long a release waits for the waiter it offered a ride to hand over its
/// proposals. The waiter only has to be scheduled; past this the release goes
/// alone and the waiter sends its proposals itself.
const HAND_OVER_WITHIN: Duration = Duration::from_millis(20);

impl LockEngine {
    /// Send `release` to every region: plain releases, or hand-offs that carry
    /// the proposals of the first waiter here for the resource, if it takes
    /// the ride (then `true`).
    pub(crate) async fn release_calls(&self, release: LockRef) -> (Replies<RemoveResponse>, bool) {
        let shard = release.shard.clone();
        let Some((proposals, answers)) = self.offer_ride(&release.resource).await else {
            let replies = self.fan_out(&shard, "release", release, |mut c, r| async move {
                c.release(r).await
            });
            return (replies, false);
        };
        metrics::counter!("globallock_hand_offs_total").increment(1);
        let replies = proposals
            .into_iter()
            .zip(answers)
            .enumerate()
            .map(|(i, (proposal, answer))| match proposal {
                None => self.call_region(
                    i,
                    &shard,
                    "release",
                    release.clone(),
                    |mut c, r| async move { c.release(r).await },
                ),
                Some(grant) => {
                    let request = HandOffRequest {
                        release: Some(release.clone()),
                        grant: Some(grant),
                    };
                    self.call_region(i, &shard, "hand_off", request, |mut c, r| async move {
                        c.hand_off(r).await
                    })
                    .map(move |(i, result)| (i, split(result, answer)))
                    .boxed()
                }
            })
            .collect();
        (replies, true)
    }

    /// Offer the first waiter for `resource` a ride: the proposals it hands
    /// over (by region), and where each region's answer goes.
    async fn offer_ride(
        &self,
        resource: &str,
    ) -> Option<(
        Vec<Option<globallock_proto::agent::GrantRequest>>,
        Vec<oneshot::Sender<Result<GrantResponse, Status>>>,
    )> {
        let rider = self.waiters.take_rider(resource)?;
        let (proposals_to, proposals) = oneshot::channel();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..self.regions.len()).map(|_| oneshot::channel()).unzip();
        rider
            .send(Ride {
                proposals: proposals_to,
                answers: receivers,
            })
            .ok()?;
        match tokio::time::timeout(HAND_OVER_WITHIN, proposals).await {
            Ok(Ok(proposals)) if proposals.iter().any(Option::is_some) => {
                Some((proposals, senders))
            }
            _ => {
                debug!("the waiter offered a ride handed over no proposal; releasing alone");
                None
            }
        }
    }
}

/// A hand-off's answer, split: the release part for the release's tally, the
/// grant part to the waiter (a failed call fails both parts alike).
fn split(
    result: Result<HandOffResponse, Status>,
    answer: oneshot::Sender<Result<GrantResponse, Status>>,
) -> Result<RemoveResponse, Status> {
    let response = match result {
        Ok(response) => response,
        Err(status) => {
            let _ = answer.send(Err(status.clone()));
            return Err(status);
        }
    };
    let granted = match response.grant_result {
        Some(GrantResult::Granted(granted)) => Ok(granted),
        Some(GrantResult::GrantError(error)) => Err(error.to_status()),
        None => Err(Status::internal(
            "the agent's hand-off answer has no grant part",
        )),
    };
    let _ = answer.send(granted);
    match response.release_result {
        Some(ReleaseResult::Released(released)) => Ok(released),
        Some(ReleaseResult::ReleaseError(error)) => Err(error.to_status()),
        None => Err(Status::internal(
            "the agent's hand-off answer has no release part",
        )),
    }
}
