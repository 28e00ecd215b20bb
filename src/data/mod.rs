//! Labelled data: readers, label normalisation, splits and quality checks.
