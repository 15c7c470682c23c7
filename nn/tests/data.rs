//! Mini-batches (coverage, sizes, seeds, epochs) and the CSV / digits loader.

use stategrad_core::{DType, Error, Tensor};
use stategrad_nn::data::{load_digits, read_csv, read_csv_file, Batches};

/// 10 examples: x[i] = [i, 100 + i], y[i] = i.
fn data(n: usize) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..n).flat_map(|i| [i as f32, 100.0 + i as f32]).collect();
    let y: Vec<i64> = (0..n as i64).collect();
    (
        Tensor::from_vec(x, &[n, 2]).unwrap(),
        Tensor::from_vec(y, &[n]).unwrap(),
    )
}

/// The example ids of each batch of `epoch`, checking the rows of x and y stay together.
fn epoch_ids(b: &Batches, epoch: u64) -> Vec<Vec<i64>> {
    b.epoch(epoch)
        .map(|batch| {
            assert_eq!(batch.len(), 2);
            let ids = batch[1].to_vec::<i64>();
            let xs = batch[0].to_vec::<f32>();
            assert_eq!(batch[0].shape(), &[ids.len(), 2]);
            for (k, &id) in ids.iter().enumerate() {
                assert_eq!(xs[2 * k], id as f32);
                assert_eq!(xs[2 * k + 1], 100.0 + id as f32);
            }
            ids
        })
        .collect()
}

#[test]
fn every_example_once_per_epoch_and_batch_sizes() {
    let (x, y) = data(10);
    for shuffle in [None, Some(3u64)] {
        for drop_last in [false, true] {
            let mut b = Batches::new(&[x.clone(), y.clone()], 4)
                .unwrap()
                .drop_last(drop_last);
            if let Some(s) = shuffle {
                b = b.shuffle(s);
            }
            assert_eq!(b.len(), 10);
            assert_eq!(b.num_batches(), if drop_last { 2 } else { 3 });
            for epoch in 0..4 {
                let batches = epoch_ids(&b, epoch);
                assert_eq!(b.epoch(epoch).len(), b.num_batches());
                let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
                if drop_last {
                    assert_eq!(sizes, [4, 4]);
                } else {
                    assert_eq!(sizes, [4, 4, 2]);
                }
                let mut all: Vec<i64> = batches.concat();
                // The order is the epoch's order, cut into batches.
                assert_eq!(all, b.order(epoch)[..all.len()].to_vec());
                all.sort();
                if drop_last {
                    // 8 distinct examples; the 2 left out are the last of the order.
                    all.dedup();
                    assert_eq!(all.len(), 8);
                } else {
                    assert_eq!(all, (0..10).collect::<Vec<_>>());
                }
            }
        }
    }
}

#[test]
fn exact_multiple_and_single_batch() {
    let (x, y) = data(8);
    let b = Batches::new(&[x.clone(), y.clone()], 4).unwrap().shuffle(1);
    assert_eq!(b.num_batches(), 2);
    assert_eq!(b.clone().drop_last(true).num_batches(), 2);
    let b = Batches::new(&[x, y], 100).unwrap();
    assert_eq!(epoch_ids(&b, 0), [(0..8).collect::<Vec<i64>>()]);
    assert_eq!(b.clone().drop_last(true).epoch(0).count(), 0);
}

#[test]
fn seeds_and_epochs_determine_the_order() {
    let (x, y) = data(50);
    let a = Batches::new(&[x.clone(), y.clone()], 8).unwrap().shuffle(7);
    let a2 = Batches::new(&[x.clone(), y.clone()], 8).unwrap().shuffle(7);
    let c = Batches::new(&[x.clone(), y.clone()], 8).unwrap().shuffle(8);
    // Same seed, same epoch: same batches.
    assert_eq!(epoch_ids(&a, 0), epoch_ids(&a2, 0));
    assert_eq!(epoch_ids(&a, 5), epoch_ids(&a2, 5));
    // Replaying an epoch gives the same batches.
    assert_eq!(epoch_ids(&a, 3), epoch_ids(&a, 3));
    // Different epochs and different seeds: different orders.
    assert_ne!(a.order(0), a.order(1));
    assert_ne!(a.order(1), a.order(2));
    assert_ne!(a.order(0), c.order(0));
    // Shuffled at all.
    assert_ne!(a.order(0), (0..50).collect::<Vec<i64>>());
    // Not shuffling: the identity every epoch.
    let plain = Batches::new(&[x, y], 8).unwrap();
    assert_eq!(plain.order(0), plain.order(9));
    assert_eq!(plain.order(4), (0..50).collect::<Vec<i64>>());
}

#[test]
fn bad_batches_are_typed_errors() {
    let (x, y) = data(5);
    let err = |r: stategrad_core::Result<Batches>| {
        assert!(matches!(r, Err(Error::InvalidArgument { .. })));
    };
    err(Batches::new(&[], 2));
    err(Batches::new(std::slice::from_ref(&x), 0));
    err(Batches::new(&[x.clone(), Tensor::zeros(&[4])], 2));
    err(Batches::new(&[y, Tensor::scalar(1.0f32)], 2));
}

#[test]
fn csv_reader() {
    let d = read_csv("1,2,3,0\n\n 4 , 5.5 ,-6, 2\n").unwrap();
    assert_eq!(d.features.shape(), &[2, 3]);
    assert_eq!(d.features.dtype(), DType::F32);
    assert_eq!(
        d.features.to_vec::<f32>(),
        vec![1.0, 2.0, 3.0, 4.0, 5.5, -6.0]
    );
    assert_eq!(d.labels.dtype(), DType::I32);
    assert_eq!(d.labels.to_vec::<i32>(), vec![0, 2]);
    assert_eq!(d.num_classes(), 3);
    for bad in ["", "1,2\n3\n", "1,2,3\n4,5\n", "1,x,0\n", "1,2,0.5\n"] {
        assert!(
            matches!(read_csv(bad), Err(Error::InvalidArgument { .. })),
            "{bad:?}"
        );
    }
    assert!(read_csv_file("/no/such/file.csv").is_err());
}

#[test]
fn digits_data_set() {
    let d = load_digits().unwrap();
    assert_eq!(d.len(), 1797);
    assert_eq!(d.features.shape(), &[1797, 64]);
    assert_eq!(d.num_classes(), 10);
    let px = d.features.to_vec::<f32>();
    assert!(px
        .iter()
        .all(|&v| (0.0..=16.0).contains(&v) && v.fract() == 0.0));
    // The first image is a 0 (the data set's first row).
    assert_eq!(d.labels.to_vec::<i32>()[0], 0);
    assert_eq!(&px[..8], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
    // Every class is present, about 180 times each.
    let mut counts = [0usize; 10];
    for l in d.labels.to_vec::<i32>() {
        counts[l as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (170..=190).contains(&c)),
        "{counts:?}"
    );

    // A seeded split is a partition, the same for the same seed.
    let (train, test) = d.split(297, 4).unwrap();
    assert_eq!((train.len(), test.len()), (1500, 297));
    let (train2, _) = d.split(297, 4).unwrap();
    assert_eq!(train.labels.to_vec::<i32>(), train2.labels.to_vec::<i32>());
    let total: f64 = train.features.astype(DType::F64).sum().item().unwrap()
        + test.features.astype(DType::F64).sum().item().unwrap();
    assert_eq!(total, d.features.astype(DType::F64).sum().item().unwrap());
    assert!(d.split(1798, 0).is_err());

    // Batches over it.
    let b = Batches::new(&[train.features.clone(), train.labels.clone()], 64)
        .unwrap()
        .shuffle(0);
    assert_eq!(b.num_batches(), 24);
    let last = b.epoch(0).last().unwrap();
    assert_eq!(last[0].shape(), &[1500 - 23 * 64, 64]);
}
