"""A model's answers to scores: choice scoring, generation, extraction, protocols, and the
per-task plans and dispatch by kind (score.tasks)."""
