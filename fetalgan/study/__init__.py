"""Reader study: a seeded real/synthetic image set in one SQLite file (:mod:`.store`), a small
web app where raters answer real/fake and quality 1-5 (:mod:`.app`), and the analysis of the
answers against image metrics (:mod:`.analyse`), with the statistics it and the sweep report
share (:mod:`.stats`: agreement, correlations, significance across groups of trials). Flask and MLflow are imported only by the
functions that need them."""
