//! The CA in a cluster: callers authenticated with service-account tokens
//! (TokenReview), and key material kept in a Secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use mesh_core::Identity;

use super::auth::{Authenticator, Caller, Credentials};
use super::{CaError, CaMaterial, MaterialError};

/// The Secret a user provides with their own CA (Istio's name for it).
pub const USER_CA_SECRET: &str = "cacerts";
/// The Secret the control plane keeps its generated CA in.
pub const GENERATED_CA_SECRET: &str = "mesh-ca-secret";
/// Extra field of a bound service-account token naming the pod's node.
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Authenticates callers by their Kubernetes service-account token, asking
/// the API server (TokenReview). The node proxy's service account is
/// special: its token must be bound to a pod, whose node it may then act for.
pub struct TokenReviewAuthenticator {
    api: Api<TokenReview>,
    trust_domain: String,
    audiences: Vec<String>,
    node_proxy: (String, String),
}

impl TokenReviewAuthenticator {
    /// Reviews tokens with `client`. Tokens must carry one of `audiences`
    /// (e.g. `istio-ca`); `node_proxy` is the (namespace, service account)
    /// node proxies run as.
    pub fn new(
        client: kube::Client,
        trust_domain: &str,
        audiences: Vec<String>,
        node_proxy: (String, String),
    ) -> Self {
        Self {
            api: Api::all(client),
            trust_domain: trust_domain.to_string(),
            audiences,
            node_proxy,
        }
    }

    async fn review(&self, token: &str) -> Result<Caller, CaError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| CaError::Upstream(format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "token not authenticated".to_string());
            return Err(CaError::Unauthenticated(why));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let (namespace, service_account) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                CaError::Unauthenticated(format!("{username:?} is not a service account"))
            })?;
        if (namespace, service_account) == (self.node_proxy.0.as_str(), self.node_proxy.1.as_str())
        {
            let node = user
                .extra
                .as_ref()
                .and_then(|extra: &BTreeMap<String, Vec<String>>| extra.get(NODE_NAME_EXTRA))
                .and_then(|values| values.first())
                .filter(|node| !node.is_empty())
                .ok_or_else(|| {
                    CaError::Unauthenticated(
                        "node proxy token is not bound to a pod on a node".to_string(),
                    )
                })?;
            return Ok(Caller::NodeProxy { node: node.clone() });
        }
        let identity = Identity::new(&self.trust_domain, namespace, service_account)
            .map_err(|e| CaError::Unauthenticated(format!("service account {username:?}: {e}")))?;
        Ok(Caller::Workload(identity))
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, CaError>> + Send + 'a>> {
        Box::pin(async move {
            match (&credentials.bearer_token, &credentials.peer_identity) {
                (Some(token), _) => self.review(token).await,
                (None, Some(identity)) => Ok(Caller::Workload(identity.clone())),
                (None, None) => Err(CaError::Unauthenticated(
                    "no credentials: present a service-account token or a mesh certificate".into(),
                )),
            }
        })
    }
}

/// Loads the CA's material from the user's `cacerts` Secret, else from the
/// generated Secret, else generates a root and stores it. If another
/// control-plane replica stores one first, theirs is used: all replicas sign
/// with the same CA.
pub async fn load_or_generate_in_secret(
    secrets: &Api<Secret>,
    trust_domain: &str,
) -> Result<CaMaterial, MaterialError> {
    for name in [USER_CA_SECRET, GENERATED_CA_SECRET] {
        if let Some(material) = read_secret(secrets, name).await? {
            return Ok(material);
        }
    }
    let material = CaMaterial::generate(trust_domain)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(GENERATED_CA_SECRET.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            material
                .to_parts()
                .into_iter()
                .map(|(name, text, _)| (name.to_string(), ByteString(text.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(material),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            read_secret(secrets, GENERATED_CA_SECRET).await?.ok_or_else(|| {
                MaterialError::Kubernetes {
                    secret: GENERATED_CA_SECRET.to_string(),
                    why: "exists but could not be read back".to_string(),
                }
            })
        }
        Err(e) => Err(MaterialError::Kubernetes {
            secret: GENERATED_CA_SECRET.to_string(),
            why: e.to_string(),
        }),
    }
}

async fn read_secret(
    secrets: &Api<Secret>,
    name: &str,
) -> Result<Option<CaMaterial>, MaterialError> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| MaterialError::Kubernetes { secret: name.to_string(), why: e.to_string() })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    CaMaterial::from_parts(&format!("Secret {name}"), |part| {
        data.get(part)
            .map(|bytes| {
                String::from_utf8(bytes.0.clone())
                    .map_err(|_| MaterialError::Bad { file: part, why: "is not UTF-8 text".into() })
            })
            .transpose()
    })
}
