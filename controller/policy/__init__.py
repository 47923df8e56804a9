"""Policy documents: models (`model`), loading a directory as one set (`loader`), and the pure
decision function (`decide`)."""
