//! The `#[procpool::task]` attribute: a plain function becomes a task type
//! that any pool can run, registered for the program's workers.
//!
//! Use it through `procpool` (`#[procpool::task]`); this crate's paths
//! (`::procpool::…`) assume that name. What it generates is documented on
//! the re-export, `procpool::task`.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Type, parse_macro_input};

/// Makes a task type from a function; see `procpool::task`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut name: Option<LitStr> = None;
    let mut type_name: Option<Ident> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("type_name") {
            type_name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(
                "unknown `#[procpool::task]` option: use `name = \"…\"` (the task's NAME) \
                 or `type_name = Ident` (the generated type)",
            ))
        }
    });
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(&func, name, type_name) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

/// One argument of the function, as a field of the task type.
struct Field {
    ident: Ident,
    ty: Type,
}

fn expand(
    func: &ItemFn,
    name: Option<LitStr>,
    type_name: Option<Ident>,
) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if sig.asyncness.is_some() {
        return Err(syn::Error::new(
            sig.asyncness.span(),
            "a procpool task runs on a worker's thread: make it a plain (not async) fn",
        ));
    }
    if !matches!(sig.safety, syn::Safety::Default) {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "a procpool task cannot be an `unsafe` fn",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a procpool task cannot be generic: a worker must know the concrete types \
             (write one #[procpool::task] fn per type)",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(
            v.span(),
            "a procpool task cannot be variadic",
        ));
    }

    let fn_ident = &sig.ident;
    let mut fields = Vec::new();
    // Where `&mut WorkerContext` goes among the call's arguments, if asked for.
    let mut call_args = Vec::new();
    let mut wants_ctx = false;
    for arg in &sig.inputs {
        let pt = match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a procpool task is a free function, not a method",
                ));
            }
            FnArg::Typed(pt) => pt,
        };
        if is_worker_context(&pt.ty) {
            if wants_ctx {
                return Err(syn::Error::new(
                    pt.span(),
                    "a procpool task takes `&mut WorkerContext` at most once",
                ));
            }
            wants_ctx = true;
            call_args.push(quote!(__procpool_ctx));
            continue;
        }
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.subpat.is_none() && p.by_ref.is_none() => p.ident.clone(),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "name this argument (`x: T`): it becomes a field of the task type",
                ));
            }
        };
        if let Type::Reference(r) = &*pt.ty {
            return Err(syn::Error::new(
                r.span(),
                "task arguments travel to a worker process, so they must be owned values \
                 (`String` for `&str`, `Vec<T>` for `&[T]`); only `&mut WorkerContext` may \
                 be borrowed",
            ));
        }
        if contains_impl_trait(&pt.ty) {
            return Err(syn::Error::new(
                pt.ty.span(),
                "task arguments need concrete types (no `impl Trait`)",
            ));
        }
        call_args.push(quote!(#ident));
        fields.push(Field {
            ident,
            ty: (*pt.ty).clone(),
        });
    }

    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let vis = &func.vis;
    let struct_ident = match type_name {
        Some(t) => t,
        None => format_ident!(
            "{}",
            camel_case(&fn_ident.to_string()),
            span = fn_ident.span()
        ),
    };
    let name_expr = match name {
        Some(lit) => quote!(#lit),
        None => {
            let plain = fn_ident.to_string();
            let plain = plain.strip_prefix("r#").unwrap_or(&plain);
            let lit = LitStr::new(plain, Span::call_site());
            quote!(::core::concat!(::core::module_path!(), "::", #lit))
        }
    };
    let field_decls = fields.iter().map(|f| {
        let (ident, ty) = (&f.ident, &f.ty);
        let doc = format!("Argument `{}` of [`{fn_ident}`].", ident.unraw());
        quote!(#[doc = #doc] #vis #ident: #ty)
    });
    let field_idents: Vec<_> = fields.iter().map(|f| &f.ident).collect();
    let example = if field_idents.is_empty() {
        format!("pool.submit({struct_ident})")
    } else {
        let list: Vec<String> = field_idents.iter().map(|i| i.unraw().to_string()).collect();
        format!("pool.submit({struct_ident} {{ {} }})", list.join(", "))
    };
    let doc = format!(
        "The task form of [`{fn_ident}`], made by `#[procpool::task]`: `{example}` runs \
         `{fn_ident}` in a worker. Its fields are the function's arguments."
    );
    let (body_struct, destructure) = if fields.is_empty() {
        (quote!(;), quote!(let _ = self;))
    } else {
        (
            quote!({ #(#field_decls,)* }),
            quote!(let #struct_ident { #(#field_idents),* } = self;),
        )
    };
    let ctx_ident = if wants_ctx {
        quote!(__procpool_ctx)
    } else {
        quote!(_)
    };
    let span = fn_ident.span();
    let register = quote_spanned! {span=>
        ::procpool::__private::inventory::submit! {
            ::procpool::__private::Collected::task::<#struct_ident>()
        }
    };
    Ok(quote! {
        #func

        #[doc = #doc]
        #[derive(::procpool::__private::serde::Serialize, ::procpool::__private::serde::Deserialize)]
        #[serde(crate = "::procpool::__private::serde")]
        #vis struct #struct_ident #body_struct

        impl ::procpool::Task for #struct_ident {
            const NAME: &'static str = #name_expr;
            type Output = #output;
            fn run(self, #ctx_ident: &mut ::procpool::WorkerContext) -> #output {
                #destructure
                #fn_ident(#(#call_args),*)
            }
        }

        #register
    })
}

/// `&mut WorkerContext` (any path ending in `WorkerContext`).
fn is_worker_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    if r.mutability.is_none() {
        return false;
    }
    match &*r.elem {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "WorkerContext"),
        _ => false,
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    matches!(ty, Type::ImplTrait(_))
}

/// `hash_block` → `HashBlock`, `mix` → `Mix`.
fn camel_case(snake: &str) -> String {
    let snake = snake.strip_prefix("r#").unwrap_or(snake);
    let mut out = String::with_capacity(snake.len());
    let mut upper = true;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        "Task".to_owned()
    } else {
        out
    }
}

trait Unraw {
    fn unraw(&self) -> Ident;
}

impl Unraw for Ident {
    fn unraw(&self) -> Ident {
        let s = self.to_string();
        match s.strip_prefix("r#") {
            Some(plain) => Ident::new(plain, self.span()),
            None => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::camel_case;

    #[test]
    fn type_names_are_upper_camel_case() {
        assert_eq!(camel_case("mix"), "Mix");
        assert_eq!(camel_case("hash_block"), "HashBlock");
        assert_eq!(camel_case("r#type"), "Type");
        assert_eq!(camel_case("_private_thing"), "PrivateThing");
        assert_eq!(camel_case("sha256_of"), "Sha256Of");
    }
}
