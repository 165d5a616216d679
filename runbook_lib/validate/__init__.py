"""Before/after statistics per signal and the SLO verdict."""
