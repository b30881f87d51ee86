"""Channel pruning of the flow network.

Modules by concern: `groups` (convs and coupled channel groups), `importance` (channel importance criteria),
`plans` (which channels stay), `apply` (masks or physical removal, save/load, cost), `sensitivity` (plans from
measured quality loss and latency), `distill` (fine-tuning by distillation), `cli` (`rifelab prune`).
"""
