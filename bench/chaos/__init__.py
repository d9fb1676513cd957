"""A chaos run, Jepsen style: publishers and consumers of every kind work on a private
PostgreSQL and a `pgqueue serve` process while a nemesis kills, crashes and freezes things at
random moments; then a checker compares what was acknowledged with the log and with what every
subscriber received.

    python -m bench.chaos --seconds 60 [--seed N] [--json report.json]

Modules: `model` (the plan: topics, subscribers, payloads), `postgres` (the private server),
`server` (the `pgqueue serve` process), `publishers`, `consumers`, `worker` (the consumer OS
process the nemesis freezes), `faults` (the nemesis), `checker` (the verdict) and `run`
(orchestration).
"""
