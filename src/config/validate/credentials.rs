//! `[[credentials]]`: the gateway's own Entra credentials for upstreams.
//! Unset settings default from the standard environment of the platform
//! (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
//! `AZURE_AUTHORITY_HOST` for workload identity; `IDENTITY_ENDPOINT`,
//! `IDENTITY_HEADER` for App Service and Container Apps).

use super::super::file::CredentialFile;
use super::super::{ClientAuth, CredentialConfig, CredentialSource};
use std::path::PathBuf;

use super::*;

/// The instance metadata service's token endpoint.
pub const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

pub(super) fn credentials(
    errs: &mut Errors,
    files: Vec<CredentialFile>,
    base: &Path,
) -> Vec<CredentialConfig> {
    credentials_with(errs, files, base, &|name| std::env::var(name).ok())
}

pub(super) fn credentials_with(
    errs: &mut Errors,
    files: Vec<CredentialFile>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<CredentialConfig> {
    let mut names = HashSet::new();
    // On-behalf-of entries name their client: resolved once all are read.
    let clients: Vec<(usize, Option<String>)> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == "on_behalf_of")
        .map(|(i, f)| (i, f.client.clone()))
        .collect();
    let mut out: Vec<CredentialConfig> = files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = |field: &str| format!("credentials[{i}].{field}");
            if errs.check_name(at("name"), &f.name) && !names.insert(f.name.clone()) {
                errs.push(at("name"), format!("duplicate credential name {:?}", f.name));
            }
            let scope = f.scope.clone().unwrap_or_default();
            if !scope.ends_with("/.default") || scope.len() <= "/.default".len() {
                errs.push(
                    at("scope"),
                    "required: the resource and /.default, e.g. \"https://cognitiveservices.azure.com/.default\"",
                );
            }
            let setting = |value: Option<String>, var: &str| value.or_else(|| env(var)).filter(|v| !v.is_empty());
            let source = match f.kind.as_str() {
                kind @ ("workload_identity" | "client_certificate" | "client_secret") => {
                    let tenant = setting(f.tenant, "AZURE_TENANT_ID");
                    let client_id = setting(f.client_id, "AZURE_CLIENT_ID");
                    for (field, value, var) in [
                        ("tenant", &tenant, "AZURE_TENANT_ID"),
                        ("client_id", &client_id, "AZURE_CLIENT_ID"),
                    ] {
                        if value.is_none() {
                            errs.push(at(field), format!("required (or {var} in the environment)"));
                        }
                    }
                    let authority = setting(f.authority, "AZURE_AUTHORITY_HOST")
                        .unwrap_or_else(|| ENTRA_AUTHORITY.to_owned());
                    let token_url = tenant.as_ref().and_then(|t| {
                        let url = format!("{}/{t}/oauth2/v2.0/token", authority.trim_end_matches('/'));
                        errs.fetch_url(&at("authority"), &url)
                    });
                    let auth = match kind {
                        "workload_identity" => {
                            let file = setting(f.token_file, "AZURE_FEDERATED_TOKEN_FILE");
                            if file.is_none() {
                                errs.push(at("token_file"), "required (or AZURE_FEDERATED_TOKEN_FILE in the environment)");
                            }
                            // Not checked here: it exists in the pod only.
                            file.map(|f| ClientAuth::FederatedToken(PathBuf::from(f)))
                        }
                        "client_certificate" => {
                            let mut file = |field: &str, value: Option<String>| match value {
                                Some(v) => Some(existing_file(errs, &at(field), &v, base)),
                                None => {
                                    errs.push(at(field), "required: a PEM file");
                                    None
                                }
                            };
                            let certificate = file("certificate", f.certificate);
                            let key = file("key", f.key);
                            certificate
                                .zip(key)
                                .map(|(certificate, key)| ClientAuth::Certificate { certificate, key })
                        }
                        _ => {
                            if f.allow_client_secret != Some(true) {
                                // Why: a secret is a standing credential; one
                                // that leaks works until someone rotates it.
                                errs.push(
                                    at("allow_client_secret"),
                                    "a client secret is a standing credential: use workload identity, a managed identity or a certificate, or set allow_client_secret = true (development)",
                                );
                            }
                            match f.secret_file {
                                Some(v) => Some(ClientAuth::Secret(existing_file(errs, &at("secret_file"), &v, base))),
                                None => {
                                    errs.push(at("secret_file"), "required: a file holding the secret");
                                    None
                                }
                            }
                        }
                    };
                    match (token_url, client_id, auth) {
                        (Some(token_url), Some(client_id), Some(auth)) => {
                            Some(CredentialSource::ClientCredentials {
                                token_url,
                                client_id,
                                auth,
                            })
                        }
                        _ => None,
                    }
                }
                "managed_identity" => {
                    if f.tenant.is_some() || f.token_file.is_some() || f.authority.is_some() {
                        errs.push(
                            format!("credentials[{i}]"),
                            "tenant, token_file and authority are workload identity's settings",
                        );
                    }
                    let endpoint = setting(f.endpoint, "IDENTITY_ENDPOINT").unwrap_or_else(|| IMDS.to_owned());
                    let endpoint = match endpoint.parse::<Uri>() {
                        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(u),
                        Ok(u) if u.scheme_str() == Some("http")
                            && u.host().is_some_and(|h| is_loopback_host(h) || h == "169.254.169.254") =>
                        {
                            Some(u)
                        }
                        _ => {
                            errs.push(
                                at("endpoint"),
                                format!("{endpoint:?}: https, or plain http to the metadata address or loopback only"),
                            );
                            None
                        }
                    };
                    endpoint.map(|endpoint| CredentialSource::ManagedIdentity {
                        endpoint,
                        client_id: f.client_id,
                        identity_header: env("IDENTITY_HEADER").filter(|h| !h.is_empty()),
                    })
                }
                "on_behalf_of" => {
                    if f.tenant.is_some() || f.token_file.is_some() || f.endpoint.is_some() {
                        errs.push(
                            format!("credentials[{i}]"),
                            "an on_behalf_of credential authenticates as its client: set client, not tenant, token_file or endpoint",
                        );
                    }
                    // Filled in from the client below.
                    None
                }
                other => {
                    errs.push(
                        at("kind"),
                        format!("{other:?} is not \"workload_identity\", \"managed_identity\", \"client_certificate\", \"client_secret\" or \"on_behalf_of\""),
                    );
                    None
                }
            };
            if f.client.is_some() && f.kind != "on_behalf_of" {
                errs.push(at("client"), "only with kind = \"on_behalf_of\"");
            }
            let refresh_before = errs.duration(
                &at("refresh_before"),
                f.refresh_before.as_deref(),
                Duration::from_secs(300),
            );
            CredentialConfig {
                name: f.name,
                source: source.unwrap_or(CredentialSource::ManagedIdentity {
                    endpoint: Uri::from_static(IMDS),
                    client_id: None,
                    identity_header: None,
                }),
                scope,
                refresh_before,
            }
        })
        .collect();
    for (i, client) in clients {
        let at = format!("credentials[{i}].client");
        let Some(name) = client else {
            errs.push(
                at,
                "required: the workload_identity credential the gateway exchanges as",
            );
            continue;
        };
        match out.iter().find(|c| c.name == name).map(|c| c.source.clone()) {
            Some(CredentialSource::ClientCredentials {
                token_url,
                client_id,
                auth,
            }) => {
                out[i].source = CredentialSource::OnBehalfOf {
                    token_url,
                    client_id,
                    auth,
                }
            }
            Some(_) => errs.push(
                at,
                format!("{name:?} is not an app's credential (workload_identity, client_certificate or client_secret): on-behalf-of needs the app itself"),
            ),
            None => errs.push(at, format!("no credential named {name:?}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: &str) -> CredentialFile {
        CredentialFile {
            name: "aoai".into(),
            kind: kind.into(),
            scope: Some("https://cognitiveservices.azure.com/.default".into()),
            ..CredentialFile::default()
        }
    }

    #[test]
    fn workload_identity_takes_its_settings_from_the_environment_the_webhook_sets() {
        let env = |name: &str| match name {
            "AZURE_TENANT_ID" => Some("aaaabbbb-0000-cccc-1111-dddd2222eeee".to_owned()),
            "AZURE_CLIENT_ID" => Some("11112222-bbbb-3333-cccc-4444dddd5555".to_owned()),
            "AZURE_FEDERATED_TOKEN_FILE" => {
                Some("/var/run/secrets/azure/tokens/azure-identity-token".to_owned())
            }
            "AZURE_AUTHORITY_HOST" => Some("https://login.microsoftonline.com/".to_owned()),
            _ => None,
        };
        let mut errs = Errors(Vec::new());
        let c = credentials_with(
            &mut errs,
            vec![file("workload_identity")],
            Path::new("."),
            &env,
        );
        assert!(errs.0.is_empty(), "{:?}", errs.0);
        let CredentialSource::ClientCredentials {
            token_url,
            client_id,
            auth: ClientAuth::FederatedToken(token_file),
        } = &c[0].source
        else {
            panic!("workload identity")
        };
        assert_eq!(
            token_url.to_string(),
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/oauth2/v2.0/token"
        );
        assert_eq!(client_id, "11112222-bbbb-3333-cccc-4444dddd5555");
        assert_eq!(
            token_file,
            Path::new("/var/run/secrets/azure/tokens/azure-identity-token")
        );
        assert_eq!(c[0].refresh_before, Duration::from_secs(300));
    }

    #[test]
    fn on_behalf_of_exchanges_as_a_workload_identity_credential() {
        let env = |name: &str| match name {
            "AZURE_TENANT_ID" => Some("t1".to_owned()),
            "AZURE_CLIENT_ID" => Some("app-1".to_owned()),
            "AZURE_FEDERATED_TOKEN_FILE" => Some("/var/run/token".to_owned()),
            _ => None,
        };
        let obo = |client: Option<&str>| CredentialFile {
            name: format!("obo-{}", client.unwrap_or("none")),
            kind: "on_behalf_of".into(),
            client: client.map(str::to_owned),
            scope: Some("https://graph.microsoft.com/.default".into()),
            ..CredentialFile::default()
        };
        let mut mi = file("managed_identity");
        mi.name = "mi".into();
        let mut errs = Errors(Vec::new());
        let c = credentials_with(
            &mut errs,
            vec![
                obo(Some("aoai")),
                file("workload_identity"),
                mi,
                obo(Some("mi")),
                obo(None),
                obo(Some("nope")),
            ],
            Path::new("."),
            &env,
        );
        let CredentialSource::OnBehalfOf {
            client_id,
            token_url,
            ..
        } = &c[0].source
        else {
            panic!("on behalf of")
        };
        assert_eq!(client_id, "app-1");
        assert!(token_url.to_string().ends_with("/t1/oauth2/v2.0/token"));
        let errs: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        for expected in [
            "credentials[3].client: \"mi\" is not an app's credential",
            "credentials[4].client: required",
            "credentials[5].client: no credential named \"nope\"",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "{expected:?} not in {errs:#?}"
            );
        }
    }

    #[test]
    fn a_credential_missing_what_it_needs_is_refused_with_each_path() {
        let mut errs = Errors(Vec::new());
        let mut mi = file("managed_identity");
        mi.endpoint = Some("http://metadata.example/token".into());
        let mut bad_scope = file("managed_identity");
        bad_scope.scope = Some("https://cognitiveservices.azure.com".into());
        let mut secret = file("client_secret");
        secret.name = "secret".into();
        secret.tenant = Some("t".into());
        secret.client_id = Some("c".into());
        secret.secret_file = Some("/nonexistent/secret".into());
        credentials_with(
            &mut errs,
            vec![
                file("workload_identity"),
                mi,
                bad_scope,
                file("api_key"),
                secret,
            ],
            Path::new("."),
            &|_| None,
        );
        let errs: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        for expected in [
            "credentials[0].tenant: required (or AZURE_TENANT_ID in the environment)",
            "credentials[0].client_id: required (or AZURE_CLIENT_ID",
            "credentials[0].token_file: required (or AZURE_FEDERATED_TOKEN_FILE",
            "credentials[1].endpoint: \"http://metadata.example/token\": https, or plain http",
            "credentials[1].name: duplicate credential name",
            "credentials[2].scope: required: the resource and /.default",
            "credentials[3].kind: \"api_key\" is not",
            "credentials[4].allow_client_secret: a client secret is a standing credential",
            "credentials[4].secret_file:",
            "credentials[4].allow_client_secret: a client secret is a standing credential",
            "credentials[4].secret_file:",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "{expected:?} not in {errs:#?}"
            );
        }
    }
}
