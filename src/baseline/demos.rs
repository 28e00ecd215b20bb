//! Demonstrations for few-shot prompts: class-balanced seeded sampling and seeded orders.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::Example;
use crate::error::{Error, Result};
use crate::prompt::Demo;

/// Demonstrations need 1 <= k <= the train split's size.
pub fn check_k_shot(k: usize, train_len: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::Config("prompt.k_shot must be at least 1 for few-shot and retrieval".into()));
    }
    if k > train_len {
        return Err(Error::Config(format!("prompt.k_shot = {k} but the train split has only {train_len} examples")));
    }
    Ok(())
}

/// `k` class-balanced demonstrations from `train`: each label's examples are shuffled with a
/// ChaCha8 generator seeded by `seed`, then labels take turns (round-robin, skipping exhausted
/// ones); the result is shuffled with the same generator so the label order carries no pattern.
pub fn sample_demos(train: &[Example], n_labels: usize, k: usize, seed: u64) -> Result<Vec<Demo>> {
    check_k_shot(k, train.len())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); n_labels];
    for (i, ex) in train.iter().enumerate() {
        if let Some(bucket) = by_label.get_mut(ex.label) {
            bucket.push(i);
        }
    }
    for bucket in &mut by_label {
        bucket.shuffle(&mut rng);
    }
    let mut picked = Vec::with_capacity(k);
    let mut round = 0;
    while picked.len() < k && by_label.iter().any(|b| round < b.len()) {
        for bucket in &by_label {
            if picked.len() < k && round < bucket.len() {
                picked.push(bucket[round]);
            }
        }
        round += 1;
    }
    if picked.len() < k {
        return Err(Error::Config(format!(
            "prompt.k_shot = {k} but the train split has only {} examples with a known label",
            picked.len()
        )));
    }
    picked.shuffle(&mut rng);
    Ok(picked.into_iter().map(|i| Demo { text: train[i].text.clone(), label: train[i].label }).collect())
}

/// `n` orders of `demos`: the first as given, the others seeded shuffles, distinct from earlier
/// orders whenever there are enough permutations.
pub fn demo_orders(demos: &[Demo], n: usize, seed: u64) -> Vec<Vec<Demo>> {
    let mut orders: Vec<Vec<usize>> = vec![(0..demos.len()).collect()];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0bde_5eed);
    while orders.len() < n {
        let mut perm: Vec<usize> = (0..demos.len()).collect();
        for _ in 0..16 {
            perm.shuffle(&mut rng);
            if !orders.contains(&perm) {
                break;
            }
        }
        orders.push(perm);
    }
    orders.into_iter().map(|p| p.into_iter().map(|i| demos[i].clone()).collect()).collect()
}
