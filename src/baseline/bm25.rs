//! Lexical retrieval of demonstrations: an Okapi BM25 index (the `bm25` crate's English
//! tokenizer: Unicode normalisation, stop words, Snowball stemming) over the retrieval pool.

use bm25::{Language, SearchEngine, SearchEngineBuilder};

/// A BM25 index of the pool texts; document ids are pool positions.
pub struct Bm25Index {
    engine: SearchEngine<u32>,
    len: usize,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bm25Index({} texts)", self.len)
    }
}

impl Bm25Index {
    /// Fit BM25 (k1 = 1.2, b = 0.75, avgdl from the texts) to `texts` and index them.
    pub fn build(texts: &[&str]) -> Self {
        let engine = SearchEngineBuilder::<u32>::with_corpus(Language::English, texts.iter().map(|t| t.to_string())).build();
        Self { engine, len: texts.len() }
    }

    /// Number of indexed texts.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `k` best-scoring pool positions for `query`, best first, as (position, score). Ties
    /// go to the lower position (the crate's own order is a hash-set's), and when fewer than `k`
    /// texts share a term with the query the rest are the first unchosen positions at score 0,
    /// so every prompt gets k demonstrations and the same ones on every run.
    pub fn nearest(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let k = k.min(self.len);
        let mut hits: Vec<(usize, f32)> = self.engine.search(query, None).into_iter().map(|r| (r.document.id as usize, r.score)).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        let mut next = 0;
        while hits.len() < k {
            if !hits.iter().any(|(i, _)| *i == next) {
                hits.push((next, 0.0));
            }
            next += 1;
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_shared_stemmed_terms_and_fills_to_k() {
        let texts = [
            "A thrilling heist movie with a clever twist.",
            "The soundtrack was lovely but the plot dragged.",
            "Heists, twists and thrills: a clever caper.",
            "Cooking show about bread.",
        ];
        let index = Bm25Index::build(&texts);
        let hits = index.nearest("clever heist twists", 3);
        assert_eq!(hits.len(), 3);
        // Both heist texts outrank the rest; stemming matches "heists"/"heist" and "twist"/"twists".
        let top: Vec<usize> = hits.iter().take(2).map(|h| h.0).collect();
        assert!(top.contains(&0) && top.contains(&2), "{hits:?}");
        assert!(hits[0].1 >= hits[1].1 && hits[1].1 > 0.0);
        // No shared term: k positions at score 0, lowest first, deterministic.
        assert_eq!(index.nearest("zzz qqq", 2), vec![(0, 0.0), (1, 0.0)]);
        assert_eq!(index.nearest("clever heist twists", 9).len(), 4);
    }
}
