//! `projector`: keeps the PostgreSQL read table current (`projector run`, the default): from the
//! RabbitMQ queue when `AMQP_URL` is set (catching up from the event store on start and on any
//! gap), else by tailing the event store. `projector rebuild [NAME]` rebuilds a projection from
//! position 0 into fresh tables and swaps them in while readers keep being served;
//! `projector list` shows each projection's checkpoint, lag and parked events. Run one per
//! read database: a second is safe (the checkpoint row is locked per batch) but useless.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    projector::cli::main(projector::cli::Projections::new()).await
}
