"""`rayops simulate`: replay a demand trace through policies (the controller's own `decide`) and the four
baselines of contracts.md section 8, and report cost against queue wait.

Modules: `trace` (formats and errors), `synthetic` (generated traces), `model` (parameters and the
values the engine shares), `engine` (the replay),
`baselines`, `policy_runner` (a policy through `decide`), `run` (one simulation), `report`, `plot`,
`prometheus_history` (demand rebuilt from Prometheus), `policies` (reading `--policy` files).
"""
