//! `#[derive(Module)]` for [stategrad](https://example.invalid/stategrad).
//!
//! This crate is an implementation detail of `stategrad`: use the derive through the facade
//! (`stategrad::Module`), which re-exports it next to the trait of the same name. See
//! [`macro@Module`] for what the derive generates and which attributes it accepts.

// Unsafe code lives only in `stategrad-simd`, where each block states its proof.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{parse_macro_input, parse_quote, Data, DeriveInput, Ident, LitStr, Type};

/// Derives `stategrad::Module` for a struct, so that `visit_states` walks every field in
/// declaration order.
///
/// # What is generated
///
/// For a struct with named fields, each field that is not `#[module(skip)]` contributes,
/// in field order:
///
/// ```ignore
/// path.push_name("field_name");
/// <FieldTy as ::stategrad::Module>::visit_states(&self.field_name, path, visitor);
/// path.pop();
/// ```
///
/// Tuple structs do the same with `path.push_index(i)`, where `i` is the field's position
/// (skipped fields keep their position, so indices always match `self.0`, `self.1`, ...).
/// Unit structs, and structs whose fields are all skipped, visit nothing. Raw identifiers
/// use their unescaped name as key (`r#type` is pushed as `"type"`). All paths in the
/// generated impl are fully qualified, so nothing needs to be imported at the use site.
///
/// Enums and unions are rejected with a compile error: a module's state layout must be
/// fixed, so write the impl by hand if you need one.
///
/// # Generics
///
/// Lifetimes, const generics and existing bounds and where-clauses are kept as they are.
/// A type parameter `T` gets an extra `T: ::stategrad::Module` bound when it appears in the
/// type of at least one visited (non-skipped) field; parameters used only in skipped fields
/// (for example in a `PhantomData<T>` or a closure type) get no bound. When a parameter is
/// only used through an associated type (`T::Output`), the bound is still placed on `T`
/// itself, so implement `Module` by hand if that is too strict.
///
/// # Attributes
///
/// All attributes live under `#[module(...)]`; anything else inside it is a compile error.
///
/// On fields:
///
/// * `#[module(skip)]`: do not visit this field. Use it for plain data that holds no state
///   (sizes, flags, closures, `PhantomData`, ...).
/// * `#[module(rename = "key")]`: push `key` (with `push_name`) instead of the field's name
///   or index. Keys pushed with `push_name` must be unique within a struct.
///
/// On the struct:
///
/// * `#[module(crate = "some::path")]`: use `some::path` instead of `::stategrad` to name
///   `Module`, `Path` and `State`, e.g. `#[module(crate = "stategrad_core")]` inside the
///   core crate's own tests, or when the facade is renamed in `Cargo.toml`.
///
/// # Example
///
/// ```ignore
/// use stategrad::Module;
///
/// #[derive(Module)]
/// struct Mlp<A: Activation> {
///     #[module(rename = "fc1")]
///     first: Linear,     // visited under "fc1"
///     second: Linear,    // visited under "second"
///     act: A,            // visited under "act"; adds `A: ::stategrad::Module`
///     #[module(skip)]
///     hidden: usize,     // not visited
/// }
///
/// #[derive(Module)]
/// struct Pair(Linear, #[module(skip)] f32, Linear); // visited under 0 and 2
/// ```
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Name of the helper attribute.
const ATTR: &str = "module";

/// Options taken from the container's `#[module(...)]` attributes.
struct ContainerOpts {
    /// Path that replaces `::stategrad`.
    krate: syn::Path,
}

/// Options taken from a field's `#[module(...)]` attributes.
#[derive(Default)]
struct FieldOpts {
    /// Span of the `skip` word, when present.
    skip: Option<Span>,
    /// Replacement path key.
    rename: Option<LitStr>,
}

/// Collects errors so that one expansion can report all of them at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn parse_container_opts(input: &DeriveInput, errors: &mut Errors) -> ContainerOpts {
    let mut krate: Option<syn::Path> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident(ATTR)) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                let path = lit.parse::<syn::Path>().map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        format!("`crate` expects a path such as \"stategrad_core\", found {:?}", lit.value()),
                    )
                })?;
                if krate.is_some() {
                    return Err(meta.error("duplicate `crate` attribute"));
                }
                krate = Some(path);
                Ok(())
            } else if meta.path.is_ident("skip") || meta.path.is_ident("rename") {
                let name = meta.path.get_ident().map(Ident::to_string).unwrap_or_default();
                Err(meta.error(format!(
                    "`{name}` is a field attribute; on the struct, `#[module(...)]` only accepts `crate = \"path\"`"
                )))
            } else {
                Err(meta.error(format!(
                    "unknown `module` attribute `{}`; on the struct, `#[module(...)]` only accepts `crate = \"path\"`",
                    path_to_string(&meta.path)
                )))
            }
        });
        if let Err(err) = res {
            errors.push(err);
        }
    }
    ContainerOpts {
        krate: krate.unwrap_or_else(|| parse_quote!(::stategrad)),
    }
}

fn parse_field_opts(field: &syn::Field, errors: &mut Errors) -> FieldOpts {
    let mut opts = FieldOpts::default();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident(ATTR)) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                if opts.skip.is_some() {
                    return Err(meta.error("duplicate `skip` attribute"));
                }
                opts.skip = Some(meta.path.span());
                Ok(())
            } else if meta.path.is_ident("rename") {
                let lit: LitStr = meta.value()?.parse()?;
                if opts.rename.is_some() {
                    return Err(meta.error("duplicate `rename` attribute"));
                }
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "`rename` expects a non-empty key"));
                }
                opts.rename = Some(lit);
                Ok(())
            } else if meta.path.is_ident("crate") {
                Err(meta.error(
                    "`crate` is a struct attribute; on a field, `#[module(...)]` accepts `skip` or `rename = \"key\"`",
                ))
            } else {
                Err(meta.error(format!(
                    "unknown `module` attribute `{}`; on a field, `#[module(...)]` accepts `skip` or `rename = \"key\"`",
                    path_to_string(&meta.path)
                )))
            }
        });
        if let Err(err) = res {
            errors.push(err);
        }
    }
    if let (Some(_), Some(rename)) = (opts.skip, &opts.rename) {
        errors.push(syn::Error::new(
            rename.span(),
            "`rename` has no effect on a field marked `skip`",
        ));
    }
    opts
}

fn path_to_string(path: &syn::Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}

/// Finds which of a set of type parameters a type mentions.
struct ParamFinder<'a> {
    params: &'a HashSet<Ident>,
    found: HashSet<Ident>,
}

impl<'ast> Visit<'ast> for ParamFinder<'_> {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first() {
                if self.params.contains(&first.ident) {
                    self.found.insert(first.ident.clone());
                }
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, _: &'ast syn::Macro) {
        // A macro in type position could expand to anything: assume it uses every parameter.
        self.found.extend(self.params.iter().cloned());
    }
}

fn expand(mut input: DeriveInput) -> syn::Result<TokenStream2> {
    let fields = match &input.data {
        Data::Struct(data) => data.fields.clone(),
        Data::Enum(data) => {
            let ident = &input.ident;
            let enum_token = data.enum_token;
            return Err(syn::Error::new_spanned(
                quote!(#enum_token #ident),
                "`#[derive(Module)]` only supports structs, not enums: a module's states must be \
                 the same for every value; implement `Module` by hand instead",
            ));
        }
        Data::Union(data) => {
            let ident = &input.ident;
            let union_token = data.union_token;
            return Err(syn::Error::new_spanned(
                quote!(#union_token #ident),
                "`#[derive(Module)]` only supports structs, not unions",
            ));
        }
    };

    let mut errors = Errors::default();
    let ContainerOpts { krate } = parse_container_opts(&input, &mut errors);

    let type_params: HashSet<Ident> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    let mut finder = ParamFinder {
        params: &type_params,
        found: HashSet::new(),
    };

    let mut seen_keys: HashMap<String, Span> = HashMap::new();
    let mut visits = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let opts = parse_field_opts(field, &mut errors);
        if opts.skip.is_some() {
            continue;
        }
        let ty: &Type = &field.ty;
        finder.visit_type(ty);

        let member = match &field.ident {
            Some(ident) => quote!(#ident),
            None => {
                let index = syn::Index::from(index);
                quote!(#index)
            }
        };
        let key_span = opts.rename.as_ref().map_or_else(
            || field.ident.as_ref().map_or(ty.span(), Ident::span),
            LitStr::span,
        );
        let key = match (&opts.rename, &field.ident) {
            (Some(rename), _) => Some(rename.value()),
            (None, Some(ident)) => Some(ident.unraw().to_string()),
            (None, None) => None,
        };
        let push = match key {
            Some(key) => {
                if let Some(previous) = seen_keys.insert(key.clone(), key_span) {
                    let mut err = syn::Error::new(
                        key_span,
                        format!("duplicate path key \"{key}\" in `#[derive(Module)]`"),
                    );
                    err.combine(syn::Error::new(previous, "first used here"));
                    errors.push(err);
                }
                let lit = LitStr::new(&key, key_span);
                quote!(path.push_name(#lit);)
            }
            None => {
                let lit = proc_macro2::Literal::usize_unsuffixed(index);
                quote!(path.push_index(#lit);)
            }
        };
        // Only the trait call carries the field type's span (so "Module is not implemented"
        // points at the field); `self`, `path` and `visitor` keep the call-site span so they
        // resolve even when the struct comes out of a `macro_rules!` macro.
        let func = quote_spanned! {ty.span()=> <#ty as #krate::Module>::visit_states };
        visits.push(quote! {
            #push
            #func(&self.#member, path, visitor);
            path.pop();
        });
    }
    errors.finish()?;

    // Bound the type parameters that visited fields use, in declaration order.
    let bounded: Vec<Ident> = input
        .generics
        .type_params()
        .filter(|p| finder.found.contains(&p.ident))
        .map(|p| p.ident.clone())
        .collect();
    if !bounded.is_empty() {
        let where_clause = input.generics.make_where_clause();
        for ident in bounded {
            where_clause
                .predicates
                .push(parse_quote!(#ident: #krate::Module));
        }
    }

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    // Unused parameters would warn in user code when nothing is visited.
    let (path_arg, visitor_arg) = if visits.is_empty() {
        (format_ident!("_path"), format_ident!("_visitor"))
    } else {
        (format_ident!("path"), format_ident!("visitor"))
    };

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Module for #ident #ty_generics #where_clause {
            fn visit_states(
                &self,
                #path_arg: &mut #krate::Path,
                #visitor_arg: &mut dyn ::core::ops::FnMut(&#krate::Path, &#krate::State),
            ) {
                #(#visits)*
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(input: DeriveInput) -> String {
        expand(input).unwrap().to_string()
    }

    fn expand_err(input: DeriveInput) -> String {
        expand(input).unwrap_err().into_compile_error().to_string()
    }

    #[test]
    fn named_fields_in_order() {
        let out = expand_str(parse_quote! {
            struct Net { a: Linear, #[module(skip)] n: usize, #[module(rename = "w")] b: Linear }
        });
        let a = out.find("push_name (\"a\")").unwrap();
        let w = out.find("push_name (\"w\")").unwrap();
        assert!(a < w);
        assert!(!out.contains("\"n\""));
        assert!(out.contains(":: stategrad :: Module"));
    }

    #[test]
    fn tuple_indices_keep_positions() {
        let out = expand_str(parse_quote! { struct P(A, #[module(skip)] u8, B); });
        assert!(out.contains("push_index (0)"));
        assert!(out.contains("push_index (2)"));
        assert!(!out.contains("push_index (1)"));
        assert!(out.contains("self . 2"));
    }

    #[test]
    fn unit_struct_has_unused_args() {
        let out = expand_str(parse_quote! { struct U; });
        assert!(out.contains("_path"));
        assert!(out.contains("_visitor"));
    }

    #[test]
    fn bounds_only_for_visited_params() {
        let out = expand_str(parse_quote! {
            struct G<'a, T, U, const N: usize> where T: Clone {
                t: Vec<T>,
                #[module(skip)] u: PhantomData<&'a U>,
            }
        });
        assert!(out.contains("T : :: stategrad :: Module"));
        assert!(!out.contains("U : :: stategrad :: Module"));
        assert!(out.contains("T : Clone"));
    }

    #[test]
    fn raw_identifier_key() {
        let out = expand_str(parse_quote! { struct R { r#type: A } });
        assert!(out.contains("push_name (\"type\")"));
    }

    #[test]
    fn crate_override() {
        let out = expand_str(parse_quote! {
            #[module(crate = "stategrad_core")]
            struct N { a: A }
        });
        assert!(out.contains("stategrad_core :: Module"));
        assert!(!out.contains(":: stategrad ::"));
    }

    #[test]
    fn errors() {
        assert!(expand_err(parse_quote! { enum E { A } }).contains("not enums"));
        assert!(expand_err(parse_quote! { union U { a: u8 } }).contains("not unions"));
        assert!(
            expand_err(parse_quote! { struct S { #[module(skp)] a: A } })
                .contains("unknown `module` attribute `skp`")
        );
        assert!(
            expand_err(parse_quote! { #[module(skip)] struct S { a: A } })
                .contains("field attribute")
        );
        assert!(
            expand_err(parse_quote! { #[module(crate = "1x")] struct S; })
                .contains("expects a path")
        );
        let dup = expand_err(parse_quote! {
            struct S { a: A, #[module(rename = "a")] b: B }
        });
        assert!(dup.contains("duplicate path key"));
        // Several mistakes are reported together.
        let both = expand_err(parse_quote! {
            #[module(foo)]
            struct S { #[module(bar)] a: A }
        });
        assert!(both.contains("`foo`") && both.contains("`bar`"));
    }
}
