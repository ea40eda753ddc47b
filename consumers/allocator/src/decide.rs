//! The allocation rule, without a database: which warehouses a quantity of one sku comes from.
//!
//! **The rule** (docs/allocation.md): take from the warehouse with the most free units first
//! (fewest splits), ties broken by warehouse id; split over the next ones when one is not
//! enough; whatever no warehouse has is missing. Free units are `on_hand - allocated`, never
//! less than zero.

/// One warehouse's stock of one sku.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    pub warehouse: String,
    pub on_hand: i64,
    pub allocated: i64,
}

impl Bin {
    pub fn free(&self) -> i64 {
        (self.on_hand - self.allocated).max(0)
    }
}

/// What [`take`] reserved: `(warehouse, units)` per warehouse, and the units no warehouse had.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Taken {
    pub parts: Vec<(String, i64)>,
    pub missing: i64,
}

/// Reserve up to `wanted` units from `bins` by the rule above, raising their `allocated`.
pub fn take(bins: &mut [Bin], wanted: i64) -> Taken {
    let mut order: Vec<usize> = (0..bins.len()).filter(|&i| bins[i].free() > 0).collect();
    order.sort_by(|&a, &b| bins[b].free().cmp(&bins[a].free()).then_with(|| bins[a].warehouse.cmp(&bins[b].warehouse)));
    let mut taken = Taken { parts: Vec::new(), missing: wanted };
    for i in order {
        if taken.missing == 0 {
            break;
        }
        let units = bins[i].free().min(taken.missing);
        bins[i].allocated += units;
        taken.missing -= units;
        taken.parts.push((bins[i].warehouse.clone(), units));
    }
    taken
}

/// Total free units of a sku.
pub fn free(bins: &[Bin]) -> i64 {
    bins.iter().map(Bin::free).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(stock: &[(&str, i64, i64)]) -> Vec<Bin> {
        stock.iter().map(|&(w, on_hand, allocated)| Bin { warehouse: w.into(), on_hand, allocated }).collect()
    }

    #[test]
    fn the_fullest_warehouse_goes_first_and_ties_go_by_warehouse_id() {
        let mut b = bins(&[("a", 5, 0), ("b", 9, 0), ("c", 9, 0)]);
        let t = take(&mut b, 3);
        assert_eq!(t, Taken { parts: vec![("b".into(), 3)], missing: 0 });
        assert_eq!(b[1].allocated, 3);
    }

    #[test]
    fn a_quantity_no_warehouse_has_alone_is_split_and_the_rest_is_missing() {
        let mut b = bins(&[("a", 2, 0), ("b", 4, 1), ("c", 0, 0)]);
        let t = take(&mut b, 10);
        assert_eq!(t, Taken { parts: vec![("b".into(), 3), ("a".into(), 2)], missing: 5 });
        assert_eq!(free(&b), 0);
        assert!(b.iter().all(|bin| bin.allocated <= bin.on_hand));
    }

    #[test]
    fn stock_below_what_is_allocated_has_nothing_free() {
        let mut b = bins(&[("a", 1, 3)]);
        assert_eq!(free(&b), 0);
        assert_eq!(take(&mut b, 1), Taken { parts: vec![], missing: 1 });
        assert_eq!(b[0].allocated, 3);
    }
}
