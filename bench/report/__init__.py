"""Reading results: leaderboards, plots, figures, reliability flags, the board index, regression checks."""
