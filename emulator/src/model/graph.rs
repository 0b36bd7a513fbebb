//! Server-side custom losses (PROTOCOL.md 5.10): an interpreter of the traced `torch.fx`
//! graph the client uploads with `create_custom_loss`, with reverse-mode differentiation so
//! `forward_backward(loss_fn="custom")` back-propagates `dLoss/dlogprobs` into the model.
//!
//! Supported: `placeholder` (the loss inputs, `logprobs` of rank 1 and others of rank 0 or
//! 1); `call_function` on `torch.`/`operator.` `add`, `sub`, `mul`, `truediv`/`div`,
//! `neg`, `pow`, `exp`, `log`, `sum`, `mean`, `clamp`, `abs`, `sqrt`, `square`, `minimum`,
//! `maximum`; `call_method` with the same names (`x.sum()`, `x.mean()`, ...); `output`
//! returning `(loss, {metric: value})`. Tensors combine elementwise when their shapes are
//! equal or one of them is a scalar. Anything else fails at creation with a user error
//! naming the op (`get_attr`, `call_module`, reductions over a `dim`, rank-2 inputs).

use super::loss::DatumInput;
use serde_json::Value;

/// Most nodes one graph may have.
const MAX_NODES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Func {
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    Pow,
    Exp,
    Log,
    Sum,
    Mean,
    Clamp,
    Abs,
    Sqrt,
    Square,
    Minimum,
    Maximum,
}

fn func_of(name: &str) -> Option<Func> {
    Some(match name {
        "add" | "iadd" => Func::Add,
        "sub" | "isub" | "subtract" => Func::Sub,
        "mul" | "imul" | "multiply" => Func::Mul,
        "truediv" | "div" | "itruediv" | "divide" => Func::Div,
        "neg" | "negative" => Func::Neg,
        "pow" => Func::Pow,
        "exp" => Func::Exp,
        "log" => Func::Log,
        "sum" => Func::Sum,
        "mean" => Func::Mean,
        "clamp" | "clip" => Func::Clamp,
        "abs" => Func::Abs,
        "sqrt" => Func::Sqrt,
        "square" => Func::Square,
        "minimum" => Func::Minimum,
        "maximum" => Func::Maximum,
        _ => return None,
    })
}

#[derive(Clone, Debug)]
enum Arg {
    Ref(usize),
    Num(f64),
    Tuple(Vec<Arg>),
    Dict(Vec<(String, Arg)>),
    None,
}

#[derive(Clone, Debug)]
enum Op {
    Input(usize),
    Call(Func),
    Output,
}

#[derive(Clone, Debug)]
struct Node {
    op: Op,
    args: Vec<Arg>,
    kwargs: Vec<(String, Arg)>,
}

/// A parsed custom loss.
#[derive(Debug)]
pub struct LossGraph {
    /// The loss's name.
    pub name: String,
    /// Inputs `(name, rank)`, `logprobs` first.
    pub inputs: Vec<(String, u8)>,
    nodes: Vec<Node>,
}

impl PartialEq for LossGraph {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

fn parse_arg(v: &Value, names: &std::collections::HashMap<String, usize>) -> Result<Arg, String> {
    Ok(match v {
        Value::Null => Arg::None,
        Value::Bool(b) => Arg::Num(f64::from(u8::from(*b))),
        Value::Number(n) => Arg::Num(n.as_f64().unwrap_or(0.0)),
        Value::Array(a) => Arg::Tuple(
            a.iter()
                .map(|x| parse_arg(x, names))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) if o.len() == 1 => {
            let (k, x) = o.iter().next().expect("one key");
            match k.as_str() {
                "ref" => {
                    let n = x.as_str().ok_or("a ref must name a node")?;
                    Arg::Ref(
                        *names
                            .get(n)
                            .ok_or_else(|| format!("ref to unknown node {n:?}"))?,
                    )
                }
                "tuple" => Arg::Tuple(
                    x.as_array()
                        .ok_or("a tuple must be an array")?
                        .iter()
                        .map(|y| parse_arg(y, names))
                        .collect::<Result<_, _>>()?,
                ),
                "dict" => Arg::Dict(
                    x.as_object()
                        .ok_or("a dict must be an object")?
                        .iter()
                        .map(|(k, y)| Ok((k.clone(), parse_arg(y, names)?)))
                        .collect::<Result<_, String>>()?,
                ),
                "float" => Arg::Num(match x.as_str() {
                    Some("inf") => f64::INFINITY,
                    Some("-inf") => f64::NEG_INFINITY,
                    Some("nan") => f64::NAN,
                    _ => return Err(format!("unknown float literal {x}")),
                }),
                other => {
                    return Err(format!(
                        "argument kind {other:?} is not supported by tinkex-emulator"
                    ))
                }
            }
        }
        Value::String(s) => {
            return Err(format!(
                "string argument {s:?} is not supported by tinkex-emulator"
            ))
        }
        Value::Object(_) => return Err("an encoded argument object must have one key".into()),
    })
}

impl LossGraph {
    /// Parses and checks a graph; every unsupported op fails here, naming it.
    pub fn parse(name: &str, inputs: &[(String, u8)], graph: &Value) -> Result<Self, String> {
        if graph.get("format").and_then(Value::as_i64) != Some(1) {
            return Err("graph format must be 1".into());
        }
        let nodes_json = graph
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or("graph.nodes must be an array")?;
        if nodes_json.len() > MAX_NODES {
            return Err(format!("graph has more than {MAX_NODES} nodes"));
        }
        match inputs.first() {
            Some((n, 1)) if n == "logprobs" => {}
            Some((n, r)) if n == "logprobs" => {
                return Err(format!(
                    "logprobs of rank {r} is not supported by tinkex-emulator (rank 1 only)"
                ))
            }
            _ => return Err("the first input must be logprobs".into()),
        }
        if let Some((n, r)) = inputs.iter().find(|(_, r)| *r > 1) {
            return Err(format!(
                "input {n:?} of rank {r} is not supported by tinkex-emulator (ranks 0 and 1)"
            ));
        }
        let mut names = std::collections::HashMap::new();
        let mut nodes = Vec::with_capacity(nodes_json.len());
        let mut has_output = false;
        for (i, n) in nodes_json.iter().enumerate() {
            let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("");
            let (op, node_name, target) = (s("op"), s("name"), s("target"));
            let args = n
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| parse_arg(x, &names))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let kwargs = n
                .get("kwargs")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, x)| Ok((k.clone(), parse_arg(x, &names)?)))
                        .collect::<Result<Vec<_>, String>>()
                })
                .transpose()?
                .unwrap_or_default();
            let op = match op {
                "placeholder" => {
                    let idx = inputs
                        .iter()
                        .position(|(n, _)| n == target)
                        .ok_or_else(|| format!("placeholder {target:?} is not a declared input"))?;
                    Op::Input(idx)
                }
                "call_function" => {
                    let short = target
                        .strip_prefix("torch.")
                        .or_else(|| target.strip_prefix("operator."))
                        .or_else(|| target.strip_prefix("_operator."))
                        .filter(|s| !s.contains('.'))
                        .and_then(func_of)
                        .ok_or_else(|| {
                            format!("custom loss op call_function {target:?} is not supported by tinkex-emulator")
                        })?;
                    Op::Call(short)
                }
                "call_method" => Op::Call(func_of(target).ok_or_else(|| {
                    format!(
                        "custom loss op call_method {target:?} is not supported by tinkex-emulator"
                    )
                })?),
                "output" => {
                    has_output = true;
                    Op::Output
                }
                other => {
                    return Err(format!(
                        "custom loss op {other:?} ({target}) is not supported by tinkex-emulator"
                    ))
                }
            };
            if let Op::Call(f) = op {
                if matches!(f, Func::Sum | Func::Mean)
                    && (args.len() > 1 || kwargs.iter().any(|(k, _)| k == "dim"))
                {
                    return Err(format!(
                        "custom loss op {target:?} with a dim is not supported by tinkex-emulator (full reductions only)"
                    ));
                }
            }
            names.insert(node_name.to_string(), i);
            nodes.push(Node { op, args, kwargs });
        }
        if !has_output {
            return Err("graph has no output node".into());
        }
        Ok(LossGraph {
            name: name.to_string(),
            inputs: inputs.to_vec(),
            nodes,
        })
    }

    /// Checks a datum carries every input at its declared rank.
    pub(crate) fn check_datum(&self, index: usize, d: &DatumInput) -> Result<(), String> {
        for (name, rank) in self.inputs.iter().skip(1) {
            let (_, shape) = d.inputs.get(name).ok_or_else(|| {
                format!(
                    "datum {index} has no loss_fn_inputs[{name:?}], which custom loss {:?} takes",
                    self.name
                )
            })?;
            if shape.len() != usize::from(*rank) {
                return Err(format!(
                    "datum {index}: loss_fn_inputs[{name:?}] has rank {}, but custom loss {:?} declared rank {rank}",
                    shape.len(),
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// Evaluates the loss on one datum: per-position loss values (the datum's loss at
    /// position 0, zeros elsewhere) and `dLoss/dlogprobs`; metrics are appended.
    pub(crate) fn evaluate(
        &self,
        d: &DatumInput,
        logps: &[f32],
        metrics: &mut Vec<(String, f64)>,
    ) -> Result<(Vec<f64>, Vec<f32>), String> {
        let n = logps.len();
        let mut vals: Vec<T> = Vec::with_capacity(self.nodes.len());
        let mut out_loss = None;
        let mut out_metrics = Vec::new();
        for node in &self.nodes {
            let v = match &node.op {
                Op::Input(0) => T::vec(logps.iter().map(|&x| f64::from(x)).collect()),
                Op::Input(i) => {
                    let (values, shape) = &d.inputs[&self.inputs[*i].0];
                    T {
                        v: values.iter().map(|&x| f64::from(x)).collect(),
                        shape: shape.clone(),
                    }
                }
                Op::Call(f) => {
                    let get = |a: &Arg| -> Result<T, String> {
                        match a {
                            Arg::Ref(r) => Ok(vals[*r].clone()),
                            Arg::Num(x) => Ok(T::scalar(*x)),
                            _ => Err("unsupported argument".into()),
                        }
                    };
                    let args: Vec<T> = node.args.iter().map(get).collect::<Result<_, _>>()?;
                    let kw = |k: &str| {
                        node.kwargs
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, a)| get(a))
                    };
                    forward(
                        *f,
                        &args,
                        kw("min").transpose()?,
                        kw("max").transpose()?,
                        kw("exponent").transpose()?,
                    )?
                }
                Op::Output => {
                    let Some(Arg::Tuple(t)) = node.args.first() else {
                        return Err("the loss must return (loss, metrics)".into());
                    };
                    match t.as_slice() {
                        [Arg::Ref(l), rest @ ..] => {
                            out_loss = Some(*l);
                            if let Some(Arg::Dict(m)) = rest.first() {
                                for (k, a) in m {
                                    let v = match a {
                                        Arg::Ref(r) => vals[*r].v.iter().sum::<f64>(),
                                        Arg::Num(x) => *x,
                                        _ => return Err(format!("metric {k:?} is not a scalar")),
                                    };
                                    out_metrics.push((k.clone(), v));
                                }
                            }
                        }
                        _ => return Err("the loss must return (loss, metrics)".into()),
                    }
                    T::scalar(0.0)
                }
            };
            if !v.v.is_empty() && v.shape.iter().product::<usize>() != v.v.len() {
                return Err("internal shape error".into());
            }
            vals.push(v);
        }
        let l = out_loss.ok_or("the graph returned no loss")?;
        if vals[l].v.len() != 1 {
            return Err(format!(
                "custom loss {:?} must return a scalar loss, got shape {:?}",
                self.name, vals[l].shape
            ));
        }
        let loss = vals[l].v[0];
        // Reverse pass.
        let mut grads: Vec<Option<Vec<f64>>> = vec![None; vals.len()];
        grads[l] = Some(vec![1.0]);
        for i in (0..=l).rev() {
            let Some(g) = grads[i].take() else { continue };
            match &self.nodes[i].op {
                Op::Input(0) => {
                    grads[i] = Some(g);
                }
                Op::Call(f) => {
                    let node = &self.nodes[i];
                    let refs: Vec<Option<usize>> = node
                        .args
                        .iter()
                        .map(|a| if let Arg::Ref(r) = a { Some(*r) } else { None })
                        .collect();
                    let args: Vec<T> = node
                        .args
                        .iter()
                        .map(|a| match a {
                            Arg::Ref(r) => vals[*r].clone(),
                            Arg::Num(x) => T::scalar(*x),
                            _ => T::scalar(0.0),
                        })
                        .collect();
                    let kwv = |k: &str| {
                        node.kwargs
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, a)| match a {
                                Arg::Ref(r) => vals[*r].clone(),
                                Arg::Num(x) => T::scalar(*x),
                                _ => T::scalar(0.0),
                            })
                    };
                    let exponent = kwv("exponent");
                    let parts = backward(
                        *f,
                        &args,
                        &vals[i],
                        &g,
                        kwv("min"),
                        kwv("max"),
                        exponent.as_ref(),
                    );
                    for (j, pg) in parts.into_iter().enumerate() {
                        if let (Some(Some(r)), Some(pg)) = (refs.get(j), pg) {
                            let target = &vals[*r];
                            let pg = reduce_to(&pg, target.v.len());
                            match &mut grads[*r] {
                                Some(acc) => acc.iter_mut().zip(&pg).for_each(|(a, b)| *a += b),
                                slot @ None => *slot = Some(pg),
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let dlogp = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, nd)| matches!(nd.op, Op::Input(0)))
            .filter_map(|(i, _)| grads[i].clone())
            .fold(vec![0.0f64; n], |mut acc, g| {
                acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                acc
            });
        if !loss.is_finite() || dlogp.iter().any(|g| !g.is_finite()) {
            return Err(format!(
                "custom loss {:?} is not finite on this datum",
                self.name
            ));
        }
        metrics.extend(out_metrics);
        let mut values = vec![0.0; n];
        if n > 0 {
            values[0] = loss;
        }
        Ok((values, dlogp.into_iter().map(|g| g as f32).collect()))
    }
}

/// A dense tensor.
#[derive(Clone, Debug)]
struct T {
    v: Vec<f64>,
    shape: Vec<usize>,
}

impl T {
    fn scalar(x: f64) -> T {
        T {
            v: vec![x],
            shape: vec![],
        }
    }
    fn vec(v: Vec<f64>) -> T {
        let n = v.len();
        T { v, shape: vec![n] }
    }
}

/// Elementwise combination with scalar broadcasting.
fn zip(a: &T, b: &T, f: impl Fn(f64, f64) -> f64) -> Result<T, String> {
    if a.v.len() == b.v.len() && (a.shape == b.shape || a.v.len() == 1) {
        let shape = if a.shape.len() >= b.shape.len() {
            a.shape.clone()
        } else {
            b.shape.clone()
        };
        return Ok(T {
            v: a.v.iter().zip(&b.v).map(|(x, y)| f(*x, *y)).collect(),
            shape,
        });
    }
    if b.v.len() == 1 {
        return Ok(T {
            v: a.v.iter().map(|x| f(*x, b.v[0])).collect(),
            shape: a.shape.clone(),
        });
    }
    if a.v.len() == 1 {
        return Ok(T {
            v: b.v.iter().map(|y| f(a.v[0], *y)).collect(),
            shape: b.shape.clone(),
        });
    }
    Err(format!(
        "shapes {:?} and {:?} do not broadcast (tinkex-emulator broadcasts scalars only)",
        a.shape, b.shape
    ))
}

fn map(a: &T, f: impl Fn(f64) -> f64) -> T {
    T {
        v: a.v.iter().map(|x| f(*x)).collect(),
        shape: a.shape.clone(),
    }
}

fn forward(
    f: Func,
    a: &[T],
    kmin: Option<T>,
    kmax: Option<T>,
    kexp: Option<T>,
) -> Result<T, String> {
    let arg = |i: usize| {
        a.get(i)
            .ok_or_else(|| format!("{f:?} needs {} arguments", i + 1))
    };
    Ok(match f {
        Func::Add => zip(arg(0)?, arg(1)?, |x, y| x + y)?,
        Func::Sub => zip(arg(0)?, arg(1)?, |x, y| x - y)?,
        Func::Mul => zip(arg(0)?, arg(1)?, |x, y| x * y)?,
        Func::Div => zip(arg(0)?, arg(1)?, |x, y| x / y)?,
        Func::Pow => {
            let e = match a.get(1) {
                Some(e) => e.clone(),
                None => kexp.ok_or("pow needs an exponent")?,
            };
            zip(arg(0)?, &e, f64::powf)?
        }
        Func::Minimum => zip(arg(0)?, arg(1)?, f64::min)?,
        Func::Maximum => zip(arg(0)?, arg(1)?, f64::max)?,
        Func::Neg => map(arg(0)?, |x| -x),
        Func::Exp => map(arg(0)?, f64::exp),
        Func::Log => map(arg(0)?, f64::ln),
        Func::Abs => map(arg(0)?, f64::abs),
        Func::Sqrt => map(arg(0)?, f64::sqrt),
        Func::Square => map(arg(0)?, |x| x * x),
        Func::Sum => T::scalar(arg(0)?.v.iter().sum()),
        Func::Mean => {
            let x = arg(0)?;
            T::scalar(x.v.iter().sum::<f64>() / x.v.len().max(1) as f64)
        }
        Func::Clamp => {
            let lo = a
                .get(1)
                .cloned()
                .or(kmin)
                .map(|t| t.v.first().copied().unwrap_or(f64::NEG_INFINITY));
            let hi = a
                .get(2)
                .cloned()
                .or(kmax)
                .map(|t| t.v.first().copied().unwrap_or(f64::INFINITY));
            let (lo, hi) = (lo.unwrap_or(f64::NEG_INFINITY), hi.unwrap_or(f64::INFINITY));
            map(arg(0)?, |x| x.max(lo).min(hi))
        }
    })
}

/// Sums a broadcast gradient back to a scalar when the operand was one.
fn reduce_to(g: &[f64], len: usize) -> Vec<f64> {
    if g.len() == len {
        g.to_vec()
    } else {
        vec![g.iter().sum()]
    }
}

/// Gradients of each positional argument given the output gradient `g`.
fn backward(
    f: Func,
    a: &[T],
    out: &T,
    g: &[f64],
    kmin: Option<T>,
    kmax: Option<T>,
    kexp: Option<&T>,
) -> Vec<Option<Vec<f64>>> {
    let at = |t: &T, i: usize| if t.v.len() == 1 { t.v[0] } else { t.v[i] };
    let n = g.len();
    let each = |h: &dyn Fn(usize) -> f64| -> Option<Vec<f64>> { Some((0..n).map(h).collect()) };
    match f {
        Func::Add => vec![each(&|i| g[i]), each(&|i| g[i])],
        Func::Sub => vec![each(&|i| g[i]), each(&|i| -g[i])],
        Func::Mul => vec![
            each(&|i| g[i] * at(&a[1], i)),
            each(&|i| g[i] * at(&a[0], i)),
        ],
        Func::Div => vec![
            each(&|i| g[i] / at(&a[1], i)),
            each(&|i| -g[i] * at(&a[0], i) / (at(&a[1], i) * at(&a[1], i))),
        ],
        Func::Pow => {
            let e = a.get(1).or(kexp).cloned().unwrap_or(T::scalar(1.0));
            vec![
                each(&|i| g[i] * at(&e, i) * at(&a[0], i).powf(at(&e, i) - 1.0)),
                each(&|i| g[i] * at(out, i) * at(&a[0], i).ln()),
            ]
        }
        Func::Minimum | Func::Maximum => vec![
            each(&|i| {
                if at(out, i) == at(&a[0], i) {
                    g[i]
                } else {
                    0.0
                }
            }),
            each(&|i| {
                if at(out, i) == at(&a[0], i) {
                    0.0
                } else {
                    g[i]
                }
            }),
        ],
        Func::Neg => vec![each(&|i| -g[i])],
        Func::Exp => vec![each(&|i| g[i] * at(out, i))],
        Func::Log => vec![each(&|i| g[i] / at(&a[0], i))],
        Func::Abs => vec![each(&|i| g[i] * at(&a[0], i).signum())],
        Func::Sqrt => vec![each(&|i| g[i] / (2.0 * at(out, i)))],
        Func::Square => vec![each(&|i| 2.0 * g[i] * at(&a[0], i))],
        Func::Sum => vec![Some(vec![g[0]; a[0].v.len()])],
        Func::Mean => {
            let m = a[0].v.len().max(1) as f64;
            vec![Some(vec![g[0] / m; a[0].v.len()])]
        }
        Func::Clamp => {
            let lo = a
                .get(1)
                .cloned()
                .or(kmin)
                .map_or(f64::NEG_INFINITY, |t| t.v[0]);
            let hi = a.get(2).cloned().or(kmax).map_or(f64::INFINITY, |t| t.v[0]);
            vec![each(&|i| {
                let x = at(&a[0], i);
                if x < lo || x > hi {
                    0.0
                } else {
                    g[i]
                }
            })]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_ll_graph_evaluates_and_differentiates() {
        let graph = serde_json::json!({"format": 1, "nodes": [
            {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}},
            {"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}},
            {"op": "call_function", "name": "mul", "target": "operator.mul", "args": [{"ref": "logprobs"}, {"ref": "weights"}], "kwargs": {}},
            {"op": "call_method", "name": "sum_1", "target": "sum", "args": [{"ref": "mul"}], "kwargs": {}},
            {"op": "call_function", "name": "neg", "target": "operator.neg", "args": [{"ref": "sum_1"}], "kwargs": {}},
            {"op": "output", "name": "output", "target": "output", "args": [{"tuple": [{"ref": "neg"}, {"dict": {"custom/neg_ll:sum": {"ref": "neg"}}}]}], "kwargs": {}}
        ]});
        let inputs = vec![("logprobs".to_string(), 1), ("weights".to_string(), 1)];
        let g = LossGraph::parse("neg_ll", &inputs, &graph).unwrap();
        let mut d = DatumInput::default();
        d.inputs.insert("weights".into(), (vec![1.0, 2.0], vec![2]));
        let mut m = Vec::new();
        let (values, grads) = g.evaluate(&d, &[-1.0, -0.5], &mut m).unwrap();
        assert_eq!(values, vec![2.0, 0.0]);
        assert_eq!(grads, vec![-1.0, -2.0]);
        assert_eq!(m, vec![("custom/neg_ll:sum".to_string(), 2.0)]);
        let bad = serde_json::json!({"format": 1, "nodes": [
            {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}},
            {"op": "call_function", "name": "x", "target": "torch.softmax", "args": [{"ref": "logprobs"}], "kwargs": {}}
        ]});
        let e = LossGraph::parse("x", &inputs[..1], &bad).unwrap_err();
        assert!(e.contains("torch.softmax"), "{e}");
    }
}
