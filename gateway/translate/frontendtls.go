package translate

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// Listener ResolvedRefs reasons of client certificate validation (the
// names later Gateway API versions give them).
const (
	listenerReasonInvalidCACertificateRef  gwv1.ListenerConditionReason = "InvalidCACertificateRef"
	listenerReasonInvalidCACertificateKind gwv1.ListenerConditionReason = "InvalidCACertificateKind"
)

// frontendValidation returns the client certificate validation that
// applies to gw's HTTPS listeners on port (spec.tls.frontend: its perPort
// entry for the port, else its default), the field it is at and the name
// of its CA bundle (ir.ClientValidation.Name); nil when none applies.
func frontendValidation(gw *gwv1.Gateway, port gwv1.PortNumber) (v *gwv1.FrontendTLSValidation, field, name string) {
	t := gw.Spec.TLS
	if t == nil || t.Frontend == nil {
		return nil, "", ""
	}
	for i, p := range t.Frontend.PerPort {
		if p.Port == port {
			return p.TLS.Validation, fmt.Sprintf("spec.tls.frontend.perPort[%d].tls.validation", i), fmt.Sprintf("%s/%s/%d", gw.Namespace, gw.Name, port)
		}
	}
	return t.Frontend.Default.Validation, "spec.tls.frontend.default.validation", gw.Namespace + "/" + gw.Name
}

// insecureFrontend returns the first of gw's fields that lets clients in
// without a verified certificate (mode AllowInsecureFallback), "" when
// none does.
func insecureFrontend(gw *gwv1.Gateway) string {
	t := gw.Spec.TLS
	if t == nil || t.Frontend == nil {
		return ""
	}
	if v := t.Frontend.Default.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
		return "spec.tls.frontend.default.validation.mode"
	}
	for i, p := range t.Frontend.PerPort {
		if v := p.TLS.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
			return fmt.Sprintf("spec.tls.frontend.perPort[%d].tls.validation.mode", i)
		}
	}
	return ""
}

// insecureFrontendCondition is the Gateway's
// InsecureFrontendValidationMode condition, True while its HTTPS listeners
// let clients in without a verified certificate; none otherwise.
func insecureFrontendCondition(gw *gwv1.Gateway) (metav1.Condition, bool) {
	field := insecureFrontend(gw)
	if field == "" {
		return metav1.Condition{}, false
	}
	return condition(gwv1.GatewayConditionInsecureFrontendValidationMode, true, gwv1.GatewayReasonConfigurationChanged,
		field+": AllowInsecureFallback: clients without a certificate, or with one that does not verify, are let in", gw.Generation), true
}

// resolveClientValidation loads the CA certificates an HTTPS listener
// checks its clients' certificates against (spec.tls.frontend); the
// reason and message say why they do not resolve. The CA bundle is the
// certificates under ca.crt of every ConfigMap the validation names, in
// the Gateway's namespace or in one whose ReferenceGrant allows it.
func (b *builder) resolveClientValidation(gw *gwv1.Gateway, l *listener) (gwv1.ListenerConditionReason, string) {
	v, field, name := frontendValidation(gw, l.spec.Port)
	if v == nil {
		return "", ""
	}
	var ca []byte
	for i, ref := range v.CACertificateRefs {
		f := fmt.Sprintf("%s.caCertificateRefs[%d]", field, i)
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			return listenerReasonInvalidCACertificateKind, fmt.Sprintf("%s: kind %s of group %q is not supported (ConfigMaps are)", f, ref.Kind, ref.Group)
		}
		ns := gw.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if ns != gw.Namespace && !b.granted(gatewayGroup, kindGateway, gw.Namespace, "", "ConfigMap", ns, string(ref.Name)) {
			return gwv1.ListenerReasonRefNotPermitted, fmt.Sprintf("%s: ConfigMap %s/%s: no ReferenceGrant in %s allows it", f, ns, ref.Name, ns)
		}
		nn := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
		b.readConfigMaps[nn] = true
		cm, ok := b.configMaps[nn]
		if !ok {
			return listenerReasonInvalidCACertificateRef, fmt.Sprintf("%s: ConfigMap %s not found", f, nn)
		}
		certs, ok := caCertificates(cm)
		if !ok {
			return listenerReasonInvalidCACertificateRef, fmt.Sprintf("%s: ConfigMap %s has no PEM certificates under %s", f, nn, CACertKey)
		}
		ca = append(ca, certs...)
	}
	if len(ca) == 0 {
		return listenerReasonInvalidCACertificateRef, field + ".caCertificateRefs: none given"
	}
	l.clientValidation = &ir.ClientValidation{Name: name, CA: ca, Optional: v.Mode == gwv1.AllowInsecureFallback}
	return "", ""
}
