"""Real app shapes, written as their frameworks' tutorials write them, served by `scalekit serve`."""
