//! ONNX-ML operators that tract 0.23 lacks, registered on the tract framework so the pure-Rust
//! backend runs what skl2onnx emits for common scikit-learn pipelines: `Scaler`, `Imputer`,
//! `TreeEnsembleRegressor`, `TreeEnsembleClassifier` (replacing tract's, which refuses a binary
//! classifier with one base value and labels binary cases its own way), `SVMClassifier`,
//! `SVMRegressor`, and `ArrayFeatureExtractor` with onnxruntime's shapes (tract's differ).
//!
//! Each operator is one tract op evaluated row by row on a `[N, F]` float input. The arithmetic
//! follows onnxruntime's CPU kernels (the reference verinet's tests compare against): scores in
//! f32, kernel dot products accumulated in f64, the same post transforms and the same label rules
//! for binary classifiers. `ZipMap` is not an operator here: [`graph::normalize`](crate::graph)
//! removes it before any backend sees the graph.

use std::collections::HashMap;

use tract_onnx::model::{Onnx, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::prelude::tract_ndarray::{Array2, ArrayView1, ArrayView2, Axis};

/// tract's ONNX framework with verinet's ONNX-ML operators added.
pub(crate) fn framework() -> Onnx {
    let mut onnx = tract_onnx::onnx();
    let ops = &mut onnx.op_register;
    ops.insert("Scaler", scaler);
    ops.insert("Imputer", imputer);
    ops.insert("TreeEnsembleRegressor", tree_ensemble_regressor);
    ops.insert("TreeEnsembleClassifier", tree_ensemble_classifier);
    ops.insert("SVMClassifier", svm_classifier);
    ops.insert("SVMRegressor", svm_regressor);
    ops.insert("ArrayFeatureExtractor", |_, _| Ok((expand(FeatureExtractor), vec![])));
    onnx
}

/// What one operator computes from a `[N, F]` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Scaler { offset: Vec<f32>, scale: Vec<f32> },
    Imputer { values: Vec<f32>, replaced: f32 },
    TreeRegressor(Box<Trees>),
    TreeClassifier(Box<TreeClassifier>),
    SvmRegressor(Box<SvmRegressor>),
    SvmClassifier(Box<SvmClassifier>),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Scaler { .. } => "Scaler",
            Kind::Imputer { .. } => "Imputer",
            Kind::TreeRegressor(_) => "TreeEnsembleRegressor",
            Kind::TreeClassifier(_) => "TreeEnsembleClassifier",
            Kind::SvmRegressor(_) => "SVMRegressor",
            Kind::SvmClassifier(_) => "SVMClassifier",
        }
    }

    /// Output columns, `None` for "as many as the input has"; classifiers first output a rank-1
    /// int64 label.
    fn outputs(&self) -> (bool, Option<usize>) {
        match self {
            Kind::Scaler { .. } | Kind::Imputer { .. } => (false, None),
            Kind::TreeRegressor(t) => (false, Some(t.n_targets)),
            Kind::TreeClassifier(c) => (true, Some(c.labels.len())),
            Kind::SvmRegressor(_) => (false, Some(1)),
            Kind::SvmClassifier(c) => (true, Some(c.score_columns())),
        }
    }

    /// The number of input features the operator reads, when it fixes one.
    fn features(&self) -> Option<usize> {
        match self {
            Kind::Scaler { offset, scale } => [offset.len(), scale.len()].into_iter().find(|&n| n > 1),
            Kind::Imputer { values, .. } => Some(values.len()).filter(|&n| n > 1),
            Kind::TreeRegressor(t) => Some(t.min_features),
            Kind::TreeClassifier(c) => Some(c.trees.min_features),
            Kind::SvmRegressor(s) => Some(s.svm.features),
            Kind::SvmClassifier(c) => Some(c.svm.features),
        }
    }

    fn eval(&self, x: ArrayView2<f32>) -> TractResult<TVec<TValue>> {
        let (n, f) = x.dim();
        if let Some(need) = self.features() {
            ensure!(f >= need, "{} reads {need} features, the input has {f}", self.name());
        }
        let out = match self {
            Kind::Scaler { offset, scale } => {
                let at = |v: &[f32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
                let y = Array2::from_shape_fn((n, f), |(i, j)| (x[(i, j)] - at(offset, j)) * at(scale, j));
                tvec!(y.into_tvalue())
            }
            Kind::Imputer { values, replaced } => {
                let at = |j: usize| if values.len() == 1 { values[0] } else { values[j] };
                let missing = |v: f32| if replaced.is_nan() { v.is_nan() } else { v == *replaced };
                let y = Array2::from_shape_fn((n, f), |(i, j)| if missing(x[(i, j)]) { at(j) } else { x[(i, j)] });
                tvec!(y.into_tvalue())
            }
            Kind::TreeRegressor(t) => {
                let mut y = Array2::<f32>::zeros((n, t.n_targets));
                for (row, mut out) in x.axis_iter(Axis(0)).zip(y.axis_iter_mut(Axis(0))) {
                    let scores = t.regress(row)?;
                    out.iter_mut().zip(scores).for_each(|(o, s)| *o = s);
                }
                tvec!(y.into_tvalue())
            }
            Kind::TreeClassifier(c) => labelled(x, c.labels.len(), |row| c.classify(row)),
            Kind::SvmRegressor(s) => {
                let y = Array2::from_shape_fn((n, 1), |(i, _)| s.predict(x.row(i)));
                tvec!(y.into_tvalue())
            }
            Kind::SvmClassifier(c) => labelled(x, c.score_columns(), |row| c.classify(row)),
        };
        Ok(out)
    }
}

/// A classifier's two outputs, row by row: int64 labels `[N]` and f32 scores `[N, columns]`.
fn labelled(x: ArrayView2<f32>, columns: usize, classify: impl Fn(ArrayView1<f32>) -> (i64, Vec<f32>)) -> TVec<TValue> {
    let mut labels = Vec::with_capacity(x.nrows());
    let mut scores = Array2::<f32>::zeros((x.nrows(), columns));
    for (row, mut out) in x.axis_iter(Axis(0)).zip(scores.axis_iter_mut(Axis(0))) {
        let (label, s) = classify(row);
        labels.push(label);
        out.iter_mut().zip(s).for_each(|(o, s)| *o = s);
    }
    tvec!(tensor1(&labels).into_tvalue(), scores.into_tvalue())
}

/// The inference-time face of an operator: type rules, then one typed [`MlOp`] after a cast of
/// the input to f32.
#[derive(Debug, Clone)]
struct MlNode(Kind);

impl Expansion for MlNode {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.outputs().0 { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        let (labelled, columns) = self.0.outputs();
        check_output_arity(outputs, if labelled { 2 } else { 1 })?;
        s.equals(&inputs[0].rank, 2)?;
        let scores = &outputs[outputs.len() - 1];
        s.equals(&scores.datum_type, DatumType::F32)?;
        s.equals(&scores.rank, 2)?;
        s.equals(&scores.shape[0], &inputs[0].shape[0])?;
        match columns {
            Some(c) => s.equals(&scores.shape[1], c.to_dim())?,
            None => s.equals(&scores.shape[1], &inputs[0].shape[1])?,
        }
        if labelled {
            s.equals(&outputs[0].datum_type, DatumType::I64)?;
            s.equals(&outputs[0].rank, 1)?;
            s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        if model.outlet_fact(x)?.datum_type != DatumType::F32 {
            x = model.wire_node(format!("{prefix}.to_f32"), cast(DatumType::F32), &[x])?[0];
        }
        model.wire_node(prefix, MlOp(self.0.clone()), &[x])
    }
}

#[derive(Debug, Clone, PartialEq)]
struct MlOp(Kind);

// tract compares ops to merge duplicates; a NaN parameter makes two equal ops differ, which only
// costs a merge.
impl Eq for MlOp {}

impl Op for MlOp {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    op_as_typed_op!();
}

impl EvalOp for MlOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let view = input.to_plain_array_view::<f32>()?.into_dimensionality()?;
        self.0.eval(view)
    }
}

impl TypedOp for MlOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].rank() == 2, "{} takes a [N, features] input", self.0.name());
        let n = inputs[0].shape[0].clone();
        let (labelled, columns) = self.0.outputs();
        let columns = columns.map(TDim::from).unwrap_or_else(|| inputs[0].shape[1].clone());
        let scores = f32::fact(&[n.clone(), columns]);
        Ok(if labelled { tvec!(i64::fact(&[n]), scores) } else { tvec!(scores) })
    }

    as_op!();
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

fn built(kind: Kind) -> Built {
    Ok((expand(MlNode(kind)), vec![]))
}

fn scaler(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let offset = node.get_attr_opt_vec::<f32>("offset")?.unwrap_or_else(|| vec![0.0]);
    let scale = node.get_attr_opt_vec::<f32>("scale")?.unwrap_or_else(|| vec![1.0]);
    node.expect_attr("offset", !offset.is_empty(), "at least one value")?;
    node.expect_attr("scale", !scale.is_empty(), "at least one value")?;
    let (a, b) = (offset.len(), scale.len());
    node.expect(a == 1 || b == 1 || a == b, || format!("offset ({a}) and scale ({b}) lengths differ"))?;
    built(Kind::Scaler { offset, scale })
}

fn imputer(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let Some(values) = node.get_attr_opt_vec::<f32>("imputed_value_floats")? else {
        return node.bail("only float imputation (imputed_value_floats) is supported");
    };
    node.expect_attr("imputed_value_floats", !values.is_empty(), "at least one value")?;
    let replaced = node.get_attr_opt::<f32>("replaced_value_float")?.unwrap_or(0.0);
    built(Kind::Imputer { values, replaced })
}

/// `ArrayFeatureExtractor(X, Y)`: the elements of X's last axis at the indices Y, flattened:
/// `X.shape[..-1] + [len(Y)]`, and `[1, len(Y)]` for a rank-1 X (onnxruntime's shapes; a scalar
/// index keeps its axis).
#[derive(Debug, Clone)]
struct FeatureExtractor;

impl Expansion for FeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, i64::datum_type())?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, data, indices| {
            let count: TDim = indices.iter().product();
            let mut shape: TVec<TDim> = if data.len() == 1 { tvec!(1.into()) } else { data[..data.len() - 1].into() };
            shape.push(count);
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (data, mut indices) = (inputs[0], inputs[1]);
        let shape = model.outlet_fact(indices)?.shape.to_tvec();
        if shape.len() != 1 {
            let flat = tvec!(shape.iter().product::<TDim>());
            let op = if shape.is_empty() { AxisOp::Add(0) } else { AxisOp::Reshape(0, shape, flat) };
            indices = model.wire_node(format!("{prefix}.flatten"), op, &[indices])?[0];
        }
        let rank = model.outlet_fact(data)?.rank();
        ensure!(rank >= 1, "ArrayFeatureExtractor reads from a tensor of rank 1 or more");
        let gather = tract_onnx::tract_core::ops::array::Gather::new(rank - 1);
        let mut out = model.wire_node(format!("{prefix}.gather"), gather, &[data, indices])?;
        if rank == 1 {
            out = model.wire_node(format!("{prefix}.row"), AxisOp::Add(0), &out)?;
        }
        Ok(out)
    }
}

// ---- post transforms (onnxruntime's ml_common) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

fn post_transform(node: &NodeProto) -> TractResult<Post> {
    Ok(match node.get_attr_opt::<&str>("post_transform")?.unwrap_or("NONE") {
        "NONE" => Post::None,
        "LOGISTIC" => Post::Logistic,
        "SOFTMAX" => Post::Softmax,
        "SOFTMAX_ZERO" => Post::SoftmaxZero,
        "PROBIT" => Post::Probit,
        other => return node.bail_attr("post_transform", &format!("unknown value {other:?}")),
    })
}

fn logistic(v: f32) -> f32 {
    let e = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 { 1.0 - e } else { e }
}

/// The inverse error function's closed-form approximation onnxruntime uses, times sqrt(2).
fn probit(v: f32) -> f32 {
    let x = 2.0 * v - 1.0;
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let ln = ((1.0 - x) * (1.0 + x)).ln();
    let a = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * ln;
    let b = ln / 0.147;
    std::f32::consts::SQRT_2 * sign * (-a + (a * a - b).sqrt()).sqrt()
}

/// The post transform of a score vector of two or more entries.
fn apply(post: Post, scores: &mut [f32]) {
    match post {
        Post::None => {}
        Post::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
        Post::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
        Post::Softmax => {
            let max = scores.iter().copied().fold(f32::MIN, f32::max);
            scores.iter_mut().for_each(|s| *s = (*s - max).exp());
            let sum: f32 = scores.iter().sum();
            scores.iter_mut().for_each(|s| *s /= sum);
        }
        Post::SoftmaxZero => {
            let max = scores.iter().copied().fold(f32::MIN, f32::max);
            let scale = (-max).exp();
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                if s.abs() > 1e-7 {
                    *s = (*s - max).exp();
                    sum += *s;
                } else {
                    *s *= scale;
                }
            }
            scores.iter_mut().for_each(|s| *s /= sum);
        }
    }
}

// ---- tree ensembles ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

#[derive(Debug, Clone, PartialEq)]
enum TreeNode {
    Branch { feature: u32, threshold: f32, cmp: Cmp, nan_goes_true: bool, if_true: u32, if_false: u32 },
    /// Its weights: `leaf_weights[start..end]`.
    Leaf { start: u32, end: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
struct Trees {
    roots: Vec<u32>,
    nodes: Vec<TreeNode>,
    /// `(target, weight)` of every leaf, leaf by leaf.
    leaf_weights: Vec<(u32, f32)>,
    n_targets: usize,
    /// One more than the highest feature index a branch reads.
    min_features: usize,
    /// The longest root-to-leaf path, which bounds every walk.
    depth: usize,
    aggregate: Aggregate,
    base: Vec<f32>,
    post: Post,
}

impl Trees {
    /// Reads the node and leaf attributes; `prefix` is `target` for regressors.
    fn parse(ctx: &ParsingContext, node: &NodeProto, prefix: &str, n_targets: usize) -> TractResult<Self> {
        let ints = |name: &str| -> TractResult<Vec<i64>> { node.get_attr_vec::<i64>(name) };
        let tree_ids = ints("nodes_treeids")?;
        let count = tree_ids.len();
        node.expect_attr("nodes_treeids", count > 0, "at least one node")?;
        let same = |name: &str, v: &[i64]| node.expect_attr(name, v.len() == count, "one value per node");
        let node_ids = ints("nodes_nodeids")?;
        same("nodes_nodeids", &node_ids)?;
        let features = ints("nodes_featureids")?;
        same("nodes_featureids", &features)?;
        let trues = ints("nodes_truenodeids")?;
        same("nodes_truenodeids", &trues)?;
        let falses = ints("nodes_falsenodeids")?;
        same("nodes_falsenodeids", &falses)?;
        let thresholds = floats(ctx, node, "nodes_values")?.unwrap_or_default();
        node.expect_attr("nodes_values", thresholds.len() == count, "one value per node")?;
        let modes = node.get_attr_tvec::<&str>("nodes_modes")?;
        node.expect_attr("nodes_modes", modes.len() == count, "one value per node")?;
        let nan_true = node.get_attr_opt_vec::<i64>("nodes_missing_value_tracks_true")?.unwrap_or_default();
        node.expect_attr(
            "nodes_missing_value_tracks_true",
            nan_true.is_empty() || nan_true.len() == count,
            "one value per node",
        )?;

        let leaf_trees = ints(&format!("{prefix}_treeids"))?;
        let leaf_nodes = ints(&format!("{prefix}_nodeids"))?;
        let leaf_targets = ints(&format!("{prefix}_ids"))?;
        let leaf_values = floats(ctx, node, &format!("{prefix}_weights"))?.unwrap_or_default();
        let leaves = leaf_trees.len();
        node.expect(
            leaf_nodes.len() == leaves && leaf_targets.len() == leaves && leaf_values.len() == leaves,
            "leaf attributes of one length",
        )?;

        let key = |t: i64, n: i64| (t, n);
        let mut index: HashMap<(i64, i64), u32> = HashMap::with_capacity(count);
        for i in 0..count {
            if index.insert(key(tree_ids[i], node_ids[i]), i as u32).is_some() {
                return node.bail(&format!("node ({}, {}) is defined twice", tree_ids[i], node_ids[i]));
            }
        }
        // Weights per leaf, in the order the attributes list them.
        let mut weights: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
        for l in 0..leaves {
            let Some(&at) = index.get(&key(leaf_trees[l], leaf_nodes[l])) else {
                return node.bail(&format!("leaf weight for unknown node ({}, {})", leaf_trees[l], leaf_nodes[l]));
            };
            let target = u32::try_from(leaf_targets[l]).ok().filter(|&t| (t as usize) < n_targets);
            let Some(target) = target else {
                return node.bail(&format!("leaf target {} out of range (0..{n_targets})", leaf_targets[l]));
            };
            weights.entry(at).or_default().push((target, leaf_values[l]));
        }

        let mut nodes = Vec::with_capacity(count);
        let mut leaf_weights = Vec::with_capacity(leaves);
        let mut children = vec![false; count];
        let mut min_features = 0;
        for i in 0..count {
            let cmp = match modes[i] {
                "LEAF" => None,
                "BRANCH_LEQ" => Some(Cmp::Leq),
                "BRANCH_LT" => Some(Cmp::Lt),
                "BRANCH_GTE" => Some(Cmp::Gte),
                "BRANCH_GT" => Some(Cmp::Gt),
                "BRANCH_EQ" => Some(Cmp::Eq),
                "BRANCH_NEQ" => Some(Cmp::Neq),
                other => return node.bail_attr("nodes_modes", &format!("unknown mode {other:?}")),
            };
            let Some(cmp) = cmp else {
                let start = leaf_weights.len() as u32;
                leaf_weights.extend(weights.remove(&(i as u32)).unwrap_or_default());
                nodes.push(TreeNode::Leaf { start, end: leaf_weights.len() as u32 });
                continue;
            };
            let child = |id: i64| {
                index.get(&key(tree_ids[i], id)).copied().ok_or_else(|| {
                    format_err!("node ({}, {}) branches to missing node {id}", tree_ids[i], node_ids[i])
                })
            };
            let (if_true, if_false) = (child(trues[i])?, child(falses[i])?);
            children[if_true as usize] = true;
            children[if_false as usize] = true;
            let feature = u32::try_from(features[i]).map_err(|_| format_err!("negative feature id {}", features[i]))?;
            min_features = min_features.max(feature as usize + 1);
            nodes.push(TreeNode::Branch {
                feature,
                threshold: thresholds[i],
                cmp,
                nan_goes_true: nan_true.get(i).is_some_and(|&v| v != 0),
                if_true,
                if_false,
            });
        }
        if !weights.is_empty() {
            return node.bail("leaf weights attached to branch nodes");
        }
        // A root is a node no branch points to; trees are kept in tree id order.
        let mut roots: Vec<(i64, u32)> =
            (0..count).filter(|&i| !children[i]).map(|i| (tree_ids[i], i as u32)).collect();
        roots.sort_unstable();
        node.expect(roots.windows(2).all(|w| w[0].0 != w[1].0), "one root per tree")?;
        let trees: std::collections::HashSet<i64> = tree_ids.iter().copied().collect();
        node.expect(roots.len() == trees.len(), "every tree has a root")?;
        let roots: Vec<u32> = roots.into_iter().map(|(_, i)| i).collect();
        let mut trees = Trees {
            roots,
            nodes,
            leaf_weights,
            n_targets,
            min_features,
            depth: 0,
            aggregate: Aggregate::Sum,
            base: vec![],
            post: Post::None,
        };
        trees.depth = trees.max_depth()?;
        Ok(trees)
    }

    /// The deepest path; refuses cycles, which would make a walk endless.
    fn max_depth(&self) -> TractResult<usize> {
        let mut deepest = 0;
        for &root in &self.roots {
            let mut stack = vec![(root, 1usize)];
            while let Some((at, depth)) = stack.pop() {
                ensure!(depth <= self.nodes.len(), "the trees contain a cycle");
                deepest = deepest.max(depth);
                if let TreeNode::Branch { if_true, if_false, .. } = self.nodes[at as usize] {
                    stack.push((if_true, depth + 1));
                    stack.push((if_false, depth + 1));
                }
            }
        }
        Ok(deepest)
    }

    /// The leaf a row reaches in the tree rooted at `root`.
    fn leaf(&self, root: u32, row: ArrayView1<f32>) -> (u32, u32) {
        let mut at = root as usize;
        loop {
            match &self.nodes[at] {
                TreeNode::Leaf { start, end } => return (*start, *end),
                TreeNode::Branch { feature, threshold, cmp, nan_goes_true, if_true, if_false } => {
                    let v = row[*feature as usize];
                    let t = *threshold;
                    let go_true = match cmp {
                        Cmp::Leq => v <= t,
                        Cmp::Lt => v < t,
                        Cmp::Gte => v >= t,
                        Cmp::Gt => v > t,
                        Cmp::Eq => v == t,
                        Cmp::Neq => v != t,
                    } || (*nan_goes_true && v.is_nan());
                    at = if go_true { *if_true } else { *if_false } as usize;
                }
            }
        }
    }

    /// Weights summed per target, and which targets any reached leaf scored.
    fn sums(&self, row: ArrayView1<f32>) -> (Vec<f32>, Vec<bool>) {
        let mut scores = vec![0f32; self.n_targets];
        let mut seen = vec![false; self.n_targets];
        for &root in &self.roots {
            let (start, end) = self.leaf(root, row);
            for &(target, w) in &self.leaf_weights[start as usize..end as usize] {
                scores[target as usize] += w;
                seen[target as usize] = true;
            }
        }
        (scores, seen)
    }

    /// Aggregated scores per target, base values added and post transform applied.
    fn regress(&self, row: ArrayView1<f32>) -> TractResult<Vec<f32>> {
        let mut scores = vec![0f32; self.n_targets];
        let mut seen = vec![false; self.n_targets];
        for &root in &self.roots {
            let (start, end) = self.leaf(root, row);
            for &(target, w) in &self.leaf_weights[start as usize..end as usize] {
                let (s, seen) = (&mut scores[target as usize], &mut seen[target as usize]);
                *s = match self.aggregate {
                    Aggregate::Sum | Aggregate::Average => *s + w,
                    Aggregate::Min if *seen => s.min(w),
                    Aggregate::Max if *seen => s.max(w),
                    Aggregate::Min | Aggregate::Max => w,
                };
                *seen = true;
            }
        }
        if self.aggregate == Aggregate::Average {
            let trees = self.roots.len() as f32;
            scores.iter_mut().for_each(|s| *s /= trees);
        }
        scores.iter_mut().zip(&self.base).for_each(|(s, b)| *s += b);
        if scores.len() >= 2 {
            apply(self.post, &mut scores);
        } else if self.post == Post::Probit {
            scores[0] = probit(scores[0]);
        }
        Ok(scores)
    }
}

/// A float list attribute, or its `_as_tensor` form (opset 3 of ai.onnx.ml) cast to f32.
fn floats(ctx: &ParsingContext, node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    if let Some(v) = node.get_attr_opt_vec::<f32>(name)? {
        return Ok(Some(v));
    }
    let Some(proto) = node.get_attr_opt::<&tract_onnx::pb::TensorProto>(&format!("{name}_as_tensor"))? else {
        return Ok(None);
    };
    let tensor = ctx.load_tensor(proto)?;
    let tensor = tensor.cast_to::<f32>()?;
    Ok(Some(tensor.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
}

fn tree_ensemble_regressor(ctx: &ParsingContext, node: &NodeProto) -> Built {
    let n_targets = node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1);
    let n_targets = usize::try_from(n_targets).ok().filter(|&n| (1..=1 << 16).contains(&n));
    let Some(n_targets) = n_targets else { return node.bail_attr("n_targets", "must be 1 to 65536") };
    let mut trees = Trees::parse(ctx, node, "target", n_targets)?;
    trees.aggregate = match node.get_attr_opt::<&str>("aggregate_function")?.unwrap_or("SUM") {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => return node.bail_attr("aggregate_function", &format!("unknown value {other:?}")),
    };
    trees.base = floats(ctx, node, "base_values")?.unwrap_or_default();
    node.expect_attr("base_values", trees.base.is_empty() || trees.base.len() == n_targets, "one per target")?;
    trees.post = post_transform(node)?;
    built(Kind::TreeRegressor(Box::new(trees)))
}

#[derive(Debug, Clone, PartialEq)]
struct TreeClassifier {
    trees: Trees,
    labels: Vec<i64>,
    /// Two classes and every leaf scoring the same one: scores are one number, the other class's
    /// derived from it.
    binary_case: bool,
    weights_all_positive: bool,
}

impl TreeClassifier {
    /// onnxruntime's TreeEnsembleClassifier: summed class weights plus base values; two classes
    /// follow its binary rules (which class a single score stands for, how the second column is
    /// made).
    fn classify(&self, row: ArrayView1<f32>) -> (i64, Vec<f32>) {
        let t = &self.trees;
        let (mut scores, mut seen) = t.sums(row);
        if self.labels.len() > 2 {
            for (k, b) in t.base.iter().enumerate() {
                scores[k] = if seen[k] { scores[k] + b } else { *b };
                seen[k] = true;
            }
            let best = (0..scores.len()).filter(|&k| seen[k]).fold(None, |best: Option<usize>, k| match best {
                Some(b) if scores[k] <= scores[b] => Some(b),
                _ => Some(k),
            });
            let label = self.labels[best.unwrap_or(0)];
            apply(t.post, &mut scores);
            return (label, scores);
        }
        // Two classes. `single`: only the first score stands, the second column is derived.
        let mut second_column = None;
        let mut single = !seen[1];
        match t.base[..] {
            [_, b1] if seen[1] => {
                scores[1] = b1 + scores[0];
                scores[0] = -scores[1];
                single = false;
            }
            [b0, b1] => {
                scores[0] += b0;
                scores[1] += b1;
                single = false;
            }
            [b0] => scores[0] += b0,
            _ => second_column = Some(SecondColumn::Negated),
        }
        let positive = if !single && seen[1] {
            scores[1]
        } else if seen[0] {
            scores[0]
        } else {
            0.0
        };
        let label = if self.binary_case {
            let (wins, column) = if self.weights_all_positive {
                (positive > 0.5, SecondColumn::Complement)
            } else {
                (positive > 0.0, SecondColumn::Negated)
            };
            second_column = Some(column);
            self.labels[usize::from(wins)]
        } else {
            i64::from(positive > 0.0)
        };
        if !single {
            apply(t.post, &mut scores);
            return (label, scores);
        }
        let s = scores[0];
        let pair = match (t.post, second_column) {
            (Post::Probit, _) => vec![probit(s), 0.0],
            (_, Some(SecondColumn::Complement)) => vec![1.0 - s, s],
            (Post::Logistic, Some(SecondColumn::Negated)) => vec![logistic(-s), logistic(s)],
            (_, Some(SecondColumn::Negated)) => vec![-s, s],
            (_, None) => vec![s, 0.0],
        };
        (label, pair)
    }
}

/// How a binary classifier's single score becomes two columns.
#[derive(Clone, Copy)]
enum SecondColumn {
    /// `[1 - s, s]`: the score is a probability.
    Complement,
    /// `[-s, s]`, or `[logistic(-s), logistic(s)]` under a logistic post transform.
    Negated,
}

fn tree_ensemble_classifier(ctx: &ParsingContext, node: &NodeProto) -> Built {
    if node.get_attr_opt_tvec::<&str>("classlabels_strings")?.is_some() {
        return node.bail("string class labels: verinet tensors carry numbers only; export int64 labels");
    }
    let labels = node.get_attr_vec::<i64>("classlabels_int64s")?;
    let c = labels.len();
    node.expect_attr("classlabels_int64s", (2..65536).contains(&c), "2 to 65535 classes")?;
    let mut trees = Trees::parse(ctx, node, "class", c)?;
    trees.base = floats(ctx, node, "base_values")?.unwrap_or_default();
    node.expect_attr("base_values", trees.base.len() <= c, "at most one per class")?;
    trees.post = post_transform(node)?;
    let classes: std::collections::HashSet<u32> = trees.leaf_weights.iter().map(|(k, _)| *k).collect();
    let binary_case = c == 2 && classes.len() == 1;
    let weights_all_positive = trees.leaf_weights.iter().all(|(_, w)| *w >= 0.0);
    built(Kind::TreeClassifier(Box::new(TreeClassifier { trees, labels, binary_case, weights_all_positive })))
}

// ---- support vector machines ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    Linear,
    Poly { gamma: f32, coef0: f32, degree: f32 },
    Rbf { gamma: f32 },
    Sigmoid { gamma: f32, coef0: f32 },
}

impl Kernel {
    fn parse(node: &NodeProto) -> TractResult<Self> {
        let params = node.get_attr_opt_vec::<f32>("kernel_params")?.unwrap_or_default();
        let (gamma, coef0, degree) = match params[..] {
            [] => (0.0, 0.0, 0.0),
            [g, c, d, ..] => (g, c, d),
            _ => return node.bail_attr("kernel_params", "needs gamma, coef0 and degree"),
        };
        Ok(match node.get_attr_opt::<&str>("kernel_type")?.unwrap_or("LINEAR") {
            "LINEAR" => Kernel::Linear,
            "POLY" => Kernel::Poly { gamma, coef0, degree },
            "RBF" => Kernel::Rbf { gamma },
            "SIGMOID" => Kernel::Sigmoid { gamma, coef0 },
            other => return node.bail_attr("kernel_type", &format!("unknown kernel {other:?}")),
        })
    }

    /// `K(x, v)`, summed in f64 as onnxruntime does.
    fn eval(&self, x: ArrayView1<f32>, v: &[f32]) -> f32 {
        let dot = || x.iter().zip(v).map(|(a, b)| f64::from(a * b)).sum::<f64>();
        let k = match *self {
            Kernel::Linear => dot(),
            Kernel::Poly { gamma, coef0, degree } => {
                (f64::from(gamma) * dot() + f64::from(coef0)).powf(f64::from(degree))
            }
            Kernel::Sigmoid { gamma, coef0 } => (f64::from(gamma) * dot() + f64::from(coef0)).tanh(),
            Kernel::Rbf { gamma } => {
                let d2: f64 = x.iter().zip(v).map(|(a, b)| f64::from(a - b).powi(2)).sum();
                (-f64::from(gamma) * d2).exp()
            }
        };
        k as f32
    }
}

/// Support vectors (or, with none, one coefficient row per class: liblinear's layout).
#[derive(Debug, Clone, PartialEq)]
struct Svm {
    kernel: Kernel,
    /// `[vectors, features]`, row-major; empty in linear mode.
    vectors: Vec<f32>,
    vector_count: usize,
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    features: usize,
}

impl Svm {
    fn vector(&self, j: usize) -> &[f32] {
        &self.vectors[j * self.features..(j + 1) * self.features]
    }
}

#[derive(Debug, Clone, PartialEq)]
struct SvmRegressor {
    svm: Svm,
    one_class: bool,
    post: Post,
}

impl SvmRegressor {
    fn predict(&self, x: ArrayView1<f32>) -> f32 {
        let svm = &self.svm;
        let mut sum = if svm.vector_count > 0 {
            (0..svm.vector_count).map(|j| svm.coefficients[j] * svm.kernel.eval(x, svm.vector(j))).sum::<f32>()
        } else {
            Kernel::Linear.eval(x, &svm.coefficients)
        } + svm.rho[0];
        if self.one_class {
            sum = if sum > 0.0 { 1.0 } else { -1.0 };
        }
        if self.post == Post::Probit { probit(sum) } else { sum }
    }
}

fn svm_regressor(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let coefficients = node.get_attr_vec::<f32>("coefficients")?;
    node.expect_attr("coefficients", !coefficients.is_empty(), "at least one value")?;
    let vector_count = usize::try_from(node.get_attr_opt::<i64>("n_supports")?.unwrap_or(0))?;
    let vectors = node.get_attr_opt_vec::<f32>("support_vectors")?.unwrap_or_default();
    let rho = node.get_attr_vec::<f32>("rho")?;
    node.expect_attr("rho", !rho.is_empty(), "at least one value")?;
    let (kernel, features) = if vector_count > 0 {
        node.expect(
            !vectors.is_empty() && vectors.len() % vector_count == 0 && coefficients.len() >= vector_count,
            "support_vectors and coefficients match n_supports",
        )?;
        (Kernel::parse(node)?, vectors.len() / vector_count)
    } else {
        (Kernel::Linear, coefficients.len())
    };
    let svm = Svm { kernel, vectors, vector_count, coefficients, rho, features };
    let one_class = node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0;
    built(Kind::SvmRegressor(Box::new(SvmRegressor { svm, one_class, post: post_transform(node)? })))
}

#[derive(Debug, Clone, PartialEq)]
struct SvmClassifier {
    svm: Svm,
    labels: Vec<i64>,
    /// Support vectors of class `i`: `starts[i]..starts[i] + per_class[i]`.
    per_class: Vec<usize>,
    starts: Vec<usize>,
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    weights_all_positive: bool,
    post: Post,
}

impl SvmClassifier {
    fn classes(&self) -> usize {
        self.labels.len()
    }

    fn pairs(&self) -> usize {
        self.classes() * (self.classes() - 1) / 2
    }

    fn svc(&self) -> bool {
        self.svm.vector_count > 0
    }

    /// Without probabilities, SVC mode scores each pair of classes (two columns for two
    /// classes); otherwise one column per class.
    fn score_columns(&self) -> usize {
        match (self.svc(), self.prob_a.is_empty(), self.classes()) {
            (true, true, 2) => 2,
            (true, true, _) => self.pairs(),
            _ => self.classes(),
        }
    }

    fn classify(&self, x: ArrayView1<f32>) -> (i64, Vec<f32>) {
        let (c, svm) = (self.classes(), &self.svm);
        if !self.svc() {
            // liblinear: one coefficient row per class, every row offset by rho[0].
            let mut scores: Vec<f32> = (0..c)
                .map(|k| Kernel::Linear.eval(x, &svm.coefficients[k * svm.features..(k + 1) * svm.features]) + svm.rho[0])
                .collect();
            let (best, max) = first_max(&scores);
            let label = if c == 2 { self.binary_label(max, best, false) } else { self.labels[best] };
            apply(self.post, &mut scores);
            return (label, scores);
        }
        let kernels: Vec<f32> = (0..svm.vector_count).map(|j| svm.kernel.eval(x, svm.vector(j))).collect();
        let mut pair_scores = Vec::with_capacity(self.pairs());
        let mut votes = vec![0usize; c];
        let n = svm.vector_count;
        for i in 0..c {
            for j in i + 1..c {
                let mut sum = 0f64;
                let (si, sj) = (self.starts[i], self.starts[j]);
                for m in 0..self.per_class[i] {
                    sum += f64::from(svm.coefficients[(j - 1) * n + si + m] * kernels[si + m]);
                }
                for m in 0..self.per_class[j] {
                    sum += f64::from(svm.coefficients[i * n + sj + m] * kernels[sj + m]);
                }
                sum += f64::from(svm.rho[pair_scores.len()]);
                votes[if sum > 0.0 { i } else { j }] += 1;
                pair_scores.push(sum as f32);
            }
        }
        // The most votes wins, the first class on a tie.
        let best = votes.iter().enumerate().fold(0, |b, (k, &v)| if v > votes[b] { k } else { b });
        let label = self.labels[best];
        if !self.prob_a.is_empty() {
            let mut pairwise = vec![0f32; c * c];
            let mut k = 0;
            for i in 0..c {
                for j in i + 1..c {
                    let p = 1.0 - logistic(pair_scores[k] * self.prob_a[k] + self.prob_b[k]);
                    let p = p.clamp(1e-7, 1.0 - 1e-7);
                    pairwise[i * c + j] = p;
                    pairwise[j * c + i] = 1.0 - p;
                    k += 1;
                }
            }
            let mut probabilities = coupled_probabilities(c, &pairwise);
            apply(self.post, &mut probabilities);
            return (label, probabilities);
        }
        if c == 2 {
            let s = pair_scores[0];
            return (label, if self.post == Post::None { vec![-s, s] } else { vec![1.0 - s, s] });
        }
        apply(self.post, &mut pair_scores);
        (label, pair_scores)
    }

    /// onnxruntime's label rule for two classes scored without votes.
    fn binary_label(&self, max: f32, best: usize, have_proba: bool) -> i64 {
        if have_proba {
            self.labels[best]
        } else if (self.weights_all_positive && max >= 0.5) || (!self.weights_all_positive && max > 0.0) {
            self.labels[1]
        } else {
            self.labels[best]
        }
    }
}

/// The first index of the largest score, and that score.
fn first_max(scores: &[f32]) -> (usize, f32) {
    scores.iter().enumerate().fold((0, scores[0]), |(b, m), (k, &s)| if s > m { (k, s) } else { (b, m) })
}

/// Class probabilities from pairwise ones by Wu, Lin and Weng's second method (libsvm's
/// `multiclass_probability`): minimise `p' Q p` under `sum(p) = 1`, at most 100 sweeps, in f32
/// like onnxruntime. `r[i * k + j]` is P(class i | i or j).
fn coupled_probabilities(k: usize, r: &[f32]) -> Vec<f32> {
    let mut q = vec![0f32; k * k];
    for i in 0..k {
        for j in 0..k {
            if i == j {
                continue;
            }
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = -r[j * k + i] * r[i * k + j];
        }
    }
    let mut p = vec![1.0 / k as f32; k];
    let mut qp = vec![0f32; k];
    let eps = 0.005 / k as f32;
    for _ in 0..100 {
        let mut pqp = 0f32;
        for i in 0..k {
            qp[i] = (0..k).map(|j| q[i * k + j] * p[j]).sum();
            pqp += p[i] * qp[i];
        }
        if qp.iter().map(|v| (v - pqp).abs()).fold(0f32, f32::max) < eps {
            break;
        }
        for i in 0..k {
            let diff = (pqp - qp[i]) / q[i * k + i];
            p[i] += diff;
            pqp = (pqp + diff * (diff * q[i * k + i] + 2.0 * qp[i])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[i * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

fn svm_classifier(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    if node.get_attr_opt_tvec::<&str>("classlabels_strings")?.is_some() {
        return node.bail("string class labels: verinet tensors carry numbers only; export int64 labels");
    }
    let labels = node.get_attr_vec::<i64>("classlabels_ints")?;
    let c = labels.len();
    node.expect_attr("classlabels_ints", (2..65536).contains(&c), "2 to 65535 classes")?;
    let coefficients = node.get_attr_vec::<f32>("coefficients")?;
    node.expect_attr("coefficients", !coefficients.is_empty(), "at least one value")?;
    let rho = node.get_attr_vec::<f32>("rho")?;
    node.expect_attr("rho", !rho.is_empty(), "at least one value")?;
    let per_class: Vec<usize> = node
        .get_attr_opt_vec::<i64>("vectors_per_class")?
        .unwrap_or_default()
        .into_iter()
        .map(usize::try_from)
        .collect::<Result<_, _>>()?;
    let vectors = node.get_attr_opt_vec::<f32>("support_vectors")?.unwrap_or_default();
    let prob_a = node.get_attr_opt_vec::<f32>("prob_a")?.unwrap_or_default();
    let prob_b = node.get_attr_opt_vec::<f32>("prob_b")?.unwrap_or_default();
    node.expect(prob_a.len() == prob_b.len(), "prob_a and prob_b of one length")?;
    let vector_count: usize = per_class.iter().sum();
    let starts: Vec<usize> = per_class.iter().scan(0, |at, n| Some(std::mem::replace(at, *at + n))).collect();
    let pairs = c * (c - 1) / 2;
    let (kernel, features) = if vector_count > 0 {
        node.expect_attr("vectors_per_class", per_class.len() == c, "one count per class")?;
        node.expect(
            !vectors.is_empty() && vectors.len() % vector_count == 0,
            "support_vectors hold vectors_per_class vectors",
        )?;
        node.expect_attr("coefficients", coefficients.len() >= (c - 1) * vector_count, "(classes - 1) x vectors")?;
        node.expect_attr("rho", rho.len() >= pairs, "one per pair of classes")?;
        node.expect(prob_a.is_empty() || prob_a.len() >= pairs, "prob_a: one per pair of classes")?;
        (Kernel::parse(node)?, vectors.len() / vector_count)
    } else {
        node.expect_attr("coefficients", coefficients.len() % c == 0, "one row per class")?;
        (Kernel::Linear, coefficients.len() / c)
    };
    let weights_all_positive = coefficients.iter().all(|&w| w >= 0.0);
    let svm = Svm { kernel, vectors, vector_count, coefficients, rho, features };
    built(Kind::SvmClassifier(Box::new(SvmClassifier {
        svm,
        labels,
        per_class,
        starts,
        prob_a,
        prob_b,
        weights_all_positive,
        post: post_transform(node)?,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupled_probabilities_of_consistent_pairs_recover_the_classes() {
        // Pairwise probabilities made from p = (0.5, 0.3, 0.2): r_ij = p_i / (p_i + p_j).
        let p = [0.5f32, 0.3, 0.2];
        let mut r = vec![0f32; 9];
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    r[i * 3 + j] = p[i] / (p[i] + p[j]);
                }
            }
        }
        let got = coupled_probabilities(3, &r);
        for (g, w) in got.iter().zip(p) {
            assert!((g - w).abs() < 1e-3, "{got:?} vs {p:?}");
        }
    }

    #[test]
    fn post_transforms_match_their_definitions() {
        let mut s = [1.0f32, 2.0, 3.0];
        apply(Post::Softmax, &mut s);
        let z: f32 = [1f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((s[2] - 3f32.exp() / z).abs() < 1e-6);
        assert!((logistic(-2.0) - 1.0 / (1.0 + 2f32.exp())).abs() < 1e-7);
        // probit is the inverse of the normal CDF: probit(0.975) ~ 1.96 (approximation ~1e-2).
        assert!((probit(0.975) - 1.96).abs() < 2e-2, "{}", probit(0.975));
    }
}
