"""Side-by-side speed benchmarks of qnorm against Stable-Baselines3's DQN (optional extra)."""
