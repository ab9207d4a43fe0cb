"""A model's answers to scores: choice scoring, generation, extraction, chat, code execution."""
