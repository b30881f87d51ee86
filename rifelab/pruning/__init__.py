"""Channel pruning of the flow network: plans, masks and physical cuts, sensitivity, distillation."""
